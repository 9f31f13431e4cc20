"""Files written whole or not at all, opened without following symbolic links, and folders held by one
process at a time.

Run and sweep folders are copied between people and live on group-writable scratch, so a record in one
may be a symbolic link to a file of someone else's: evolver never writes, truncates or appends through
one (`open_record`, `refuse_links`), and a whole file replaces its link rather than writing into its
target (`write_atomic` renames over it).
"""
from __future__ import annotations

import os
import socket
import stat
import tempfile
import time
from pathlib import Path

from evolver_common.errors import BadInput

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # not on Windows, where links need privileges to make


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; a file written whole should read as any file the user creates (a rig under
# another account reads the images), so it gets the mode the umask gives.
FILE_MODE = 0o666 & ~_umask()
FOLDER_MODE = 0o777 & ~_umask()  # what mkdir gives; mkdtemp gives 0700


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all (temp file in the same folder, then rename), with the
    mode the user's umask gives new files. A symbolic link at `path` is replaced, its target untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # not on Windows, which has no such modes
            os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def open_record(path: Path, flags: int) -> int:
    """A file descriptor of the record `path` (os.open `flags`), refusing a symbolic link in its place."""
    try:
        return os.open(path, flags | NOFOLLOW, FILE_MODE)
    except OSError as err:
        if os.path.islink(path):
            raise BadInput(_linked(path.parent, [path.name])) from None
        raise


def refuse_links(folder: Path, names: list[str] | tuple[str, ...]) -> None:
    """BadInput naming every entry of `names` in `folder` (and anything inside those that are folders)
    that is a symbolic link: evolver would write through it into another file."""
    linked = []
    for name in names:
        path = folder / name
        if path.is_symlink():
            linked.append(name)
        elif path.is_dir():
            linked += [str(p.relative_to(folder)) for p in path.rglob("*") if p.is_symlink()]
    if linked:
        raise BadInput(_linked(folder, linked))


def _linked(folder: Path, names: list[str]) -> str:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (f"The folder {folder} holds symbolic links where evolver keeps its records ({shown}): writing "
            "the run would write into the files they point to. Replace each link with a copy of its file "
            "(cp --remove-destination \"$(readlink -f F)\" F), or work on a copy of the folder made with "
            "cp -rL.")


PROBE_RETRIES = 10  # 0.2 s


class FolderLock:
    """An advisory lock (flock) on `folder/.lock`, naming its holder in the file: exclusive for a writer,
    `shared` for a writer of one part (a unit's run inside a unit set's folder, while the set is not run)."""

    NAME = ".lock"

    def __init__(self, folder: Path, shared: bool = False):
        self.path, self.shared, self._handle = Path(folder) / self.NAME, shared, None

    def acquire(self, what: str = "run folder") -> FolderLock:
        try:
            import fcntl
        except ImportError:  # no advisory locks on this system (Windows): nothing to hold
            return self
        fd = open_record(self.path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK)  # a FIFO in its place: no wait
        handle = os.fdopen(fd, "r+")
        try:
            self._take(handle, fcntl)
        except OSError:
            holder = handle.read(500).strip() or "another process"
            handle.close()
            raise BadInput(f"The {what} {self.path.parent} is in use by {holder}. Two processes writing one run "
                           "would mix their generations: wait for it to finish or stop it, then resume.") from None
        if not self.shared:
            handle.truncate(0)
            handle.write(f"evolver process {os.getpid()} on {socket.gethostname()}, since "
                         f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
            handle.flush()
        self._handle = handle
        return self

    def _take(self, handle, fcntl) -> None:
        # a reader's `held` probe holds the lock shared for microseconds: try again before calling it in use
        for attempt in range(PROBE_RETRIES):
            try:
                fcntl.flock(handle, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                return
            except OSError:
                if attempt == PROBE_RETRIES - 1:
                    raise
                time.sleep(0.02)

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    @classmethod
    def held(cls, folder: Path) -> bool:
        """Whether a writer holds `folder`'s lock now (read without creating or changing anything)."""
        try:
            import fcntl
        except ImportError:
            return False
        try:
            fd = os.open(Path(folder) / cls.NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:  # no lock file (never written, or not readable): no writer known
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except OSError:
            return True
        finally:
            os.close(fd)  # and with it the shared lock, if taken


def is_regular(path: Path) -> bool:
    """Whether `path` is a regular file itself (not a link, FIFO, device or folder)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False
