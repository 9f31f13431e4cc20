"""The run folder (docs/run-folder.md): what a run leaves on disk, and how it survives being killed.

`RunDirectory` is the only reader and writer of a run folder's records. Whole files (codes, images, config,
state) are written to a temporary name and renamed. The tables grow by appending, so that a generation
costs the same at 10 or 10,000 generations; their committed length is kept in `state/state.npz`, which is
written last, and a resumed run cuts them back to it. The state file is therefore the commit point: a
generation exists once its state is written, and everything of a later one is discarded.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evolver.run_state import Best, RunState, noise_free_run
from evolver.tables import BY_NAME, Features, Table, headers
from evolver_common import BadInput, FolderLock, open_record, refuse_links, write_atomic
from evolver_common.files import FOLDER_MODE
from evolver_common.images import png_bytes
from evolver_common.secrets import redact

REQUIRED_TABLES = ("generations.csv", "scores.csv")
STATE_FILE = Path("state") / "state.npz"
# what a run writes: none may be a symbolic link (evolver_common.files)
RECORDS = ("config.json", "generations.csv", "scores.csv", "references.csv", "reference.csv", "state", "codes",
           "channels", "images", "best.png", "best_code.npy", "best.json", "trajectory.html", FolderLock.NAME)
UNIT_FOLDER = re.compile(r"unit\d+")  # a unit's run inside a unit set's folder
# A session's folder (evolver.session): what it asked, each block's order, its commit, a run folder a thread.
SESSION_FILE = "session.json"
SESSION_STATE = Path("state") / "session.npz"
BLOCKS = "blocks.csv"
THREAD_FOLDER = re.compile(r"thread(\d+)")


def is_run_folder(path: Path) -> bool:
    """Whether `path` holds what `RunDirectory.open` needs: config.json and the required tables."""
    return all((Path(path) / name).is_file() for name in ("config.json", *REQUIRED_TABLES))


def is_session(path: Path) -> bool:
    """Whether `path` is a session's folder (evolver.session)."""
    return (Path(path) / SESSION_FILE).is_file()


def session_record(path: Path) -> dict[str, Any]:
    """A session's session.json (its run options and threads as asked); BadInput naming it if damaged."""
    try:
        recorded = json.loads((Path(path) / SESSION_FILE).read_text(encoding="utf-8"))
        if not isinstance(recorded.get("run"), dict) or not isinstance(recorded.get("threads"), list):
            raise ValueError("it does not hold a session's \"run\" and \"threads\"")
        return recorded
    except (ValueError, UnicodeDecodeError, AttributeError) as err:
        raise BadInput(f"{Path(path) / SESSION_FILE} is damaged ({type(err).__name__}: {str(err)[:200]}), so the "
                       "session cannot be read as one or continued. Its threads' folders are intact and readable "
                       "(evolver.open_run).") from None


def holder(path: Path) -> Path | None:
    """The folder whose lock holds the run at `path` while it runs as one of several: its unit set's or its
    session's; None for a run of its own."""
    path = Path(path)
    if UNIT_FOLDER.fullmatch(path.name) or THREAD_FOLDER.fullmatch(path.name) and is_session(path.parent):
        return path.parent
    return None


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _encode(tree: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(tree, np.ndarray):
        key = f"array{len(arrays)}"
        arrays[key] = tree
        return {"__array__": key}
    if isinstance(tree, dict):
        return {k: _encode(v, arrays) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_encode(v, arrays) for v in tree]
    return tree.item() if isinstance(tree, np.generic) else tree


def _decode(tree: Any, arrays) -> Any:
    if isinstance(tree, dict):
        if set(tree) == {"__array__"}:
            return arrays[tree["__array__"]]
        return {k: _decode(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_decode(v, arrays) for v in tree]
    return tree


def state_bytes(tree: dict[str, Any]) -> bytes:
    """A nested dict of numbers, strings, lists and numpy arrays as one .npz (no pickle)."""
    arrays: dict[str, np.ndarray] = {}
    meta = json.dumps(_encode(tree, arrays))
    buffer = io.BytesIO()
    np.savez(buffer, __meta__=np.array(meta), **arrays)
    return buffer.getvalue()


def read_state(path: Path) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        return _decode(json.loads(str(arrays.pop("__meta__"))), arrays)
    except Exception as err:  # a damaged file fails in many ways (zip, npy, JSON, keys): all mean the same
        raise BadInput(f"The state file {path} is damaged ({type(err).__name__}: {str(err)[:200]}), so the run "
                       "cannot continue from it. Its tables, codes and images are intact; start a new run, or "
                       "restore the file from a backup.") from None


def check_out_folder(path: Path, option: str = "--out") -> None:
    """BadInput where `path` cannot be made a folder: it, or one above it, is a file (or another non-folder)."""
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            raise BadInput(f"{option} {path}: {part} is {'a file' if part.is_file() else 'not a folder'}, so no folder "
                           f"can be made there. Give a folder's path (made if missing).")


class RunDirectory:
    """One run's folder: config.json, the tables, codes/, images/, best.*, state/ (docs/run-folder.md)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._locks: list[FolderLock] = []
        self._headers: dict[str, tuple[str, ...]] | None = None
        self._tallies: dict[str, _Tally] = {}  # what each table holds as written: bytes, rows, digest

    def lock(self, held: FolderLock | None = None) -> None:
        """Hold the folder for this process until `release` (or its exit): a second process that would
        write the same run is refused, naming the first. A unit's run inside a unit set's folder also holds
        the set's lock shared: refused while the set runs, beside other units' runs. `held`: the set's
        lock, held by this process for the whole set, instead. A folder whose records are symbolic links is
        refused, naming them: writing would write into the files they point to (reading them is harmless)."""
        refuse_links(self.path, RECORDS)
        if held is not None:
            self._locks.append(held)
            return
        self._locks.append(FolderLock(self.path).acquire())
        parent = self.path.parent
        if UNIT_FOLDER.fullmatch(self.path.name) and (parent / FolderLock.NAME).is_file():
            try:
                self._locks.append(FolderLock(parent, shared=True).acquire("unit set's folder"))
            except BadInput:
                self.release()
                raise

    def release(self) -> None:
        for lock in self._locks:
            lock.release()
        self._locks = []

    @classmethod
    def create(cls, path: str | Path, config: dict[str, Any], features: Features = Features(),
               files: dict[str, bytes] | None = None, lock: FolderLock | None = None) -> RunDirectory:
        """A new run folder, locked (by `lock`, a unit set's, or its own), with its config, the headers of the
        tables a run with `features` has and `files` ({name: bytes}). It is made under a temporary name
        and renamed into place whole, so a kill or a full disk leaves no half-made run folder."""
        path = Path(path)
        check_out_folder(path)
        if path.is_symlink() or path.exists() and any(path.iterdir()):
            raise BadInput(
                f"The output folder {path} already exists and is not an empty folder. Give a new --out "
                f"folder, or continue that run with `evolver run --resume {path}`."
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        run = cls(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".creating"))
        try:
            os.chmod(run.path, FOLDER_MODE)  # mkdtemp makes it 0700: a rig under another account reads it
            if lock is None:
                run.lock()
            else:
                run._locks.append(lock)
            run.write_config(config)
            run._headers = headers(features)
            for name, header in run._headers.items():
                text = (",".join(header) + "\n").encode()
                write_atomic(run.path / name, text)
                run._tallies[name] = _Tally(text)
            for name, data in (files or {}).items():
                run.write_file(name, data)
            os.rename(run.path, path)  # onto nothing, or an empty folder
        except BaseException:
            run.release()
            shutil.rmtree(run.path, ignore_errors=True)
            raise
        run.path = path
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDirectory:
        """An existing run folder (to read; `lock` it to write), refused if it is not one."""
        run = cls(path)
        missing = [n for n in ("config.json", *REQUIRED_TABLES) if not (run.path / n).is_file()]
        if missing:
            raise BadInput(
                f"{run.path} is not an evolver run folder: {', '.join(missing)} missing. A run folder "
                "is what `evolver run` writes (runs/<time>-<name>/ or --out DIR)."
            )
        return run

    def config(self) -> dict[str, Any]:
        """config.json, with what runs recorded before an option existed read as that option's absence."""
        path = self.path / "config.json"
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(config, dict) or not isinstance(config.get("run"), dict):
                raise ValueError("it does not hold a run's options under \"run\"")
        except (ValueError, UnicodeDecodeError) as err:
            raise BadInput(f"The run's config.json ({path}) is damaged ({type(err).__name__}: {str(err)[:200]}), so "
                           "the run cannot be read or continued. Its tables, codes and images are intact; restore "
                           "the file from a backup or a copy of the folder.") from None
        config.setdefault("resolved", {}).setdefault("retest", None)  # runs before the re-test had none
        return config

    def write_config(self, config: dict[str, Any]) -> None:
        """config.json, with a rig's literal token written `token=REDACTED` wherever it appears (spec, command line)."""
        write_atomic(self.path / "config.json", (redact(json.dumps(config, indent=2)) + "\n").encode())

    def write_file(self, name: str, data: bytes) -> None:
        write_atomic(self.path / name, data)

    def headers(self) -> dict[str, tuple[str, ...]]:
        """{table name: its recorded header} for the tables the run has."""
        if self._headers is None:
            found = {}
            for name in BY_NAME:
                if (self.path / name).is_file():
                    with open(self.path / name, encoding="utf-8", errors="replace") as f:  # checked by roll_back
                        found[name] = tuple(f.readline().strip().split(","))
            self._headers = found
        return self._headers

    def append(self, table: Table, sources: list[Any]) -> None:
        """Append the rows of `sources` to `table`, in the columns its header has (committed only by the
        next `commit`)."""
        header = self.headers()[table.name]
        data = "".join(",".join(_csv_field(v) for v in table.row(header, s)) + "\n" for s in sources).encode()
        tally = self._tally(table.name)  # before the rows are added
        fd = open_record(self.path / table.name, os.O_WRONLY | os.O_APPEND)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tally.add(data, len(sources))

    def _tally(self, name: str) -> _Tally:
        """The table's tally, counted from the file itself for a folder neither created nor rolled back here."""
        if name not in self._tallies:
            with os.fdopen(open_record(self.path / name, os.O_RDONLY), "rb") as f:
                tally = _Tally(f.readline())
                tally.add(rest := f.read(), rest.count(b"\n"))
            self._tallies[name] = tally
        return self._tallies[name]

    def commit(self, state: RunState, tree: dict[str, Any] | None = None) -> None:
        """Make everything written so far part of the run: `state` with each table's length, rows and digest
        (`tree`: that as `committed_tree` gave it, for a session that records it first)."""
        write_atomic(self.path / STATE_FILE, state_bytes(tree if tree is not None else self.committed_tree(state)))

    def restore(self, tree: dict[str, Any]) -> None:
        """Commit `tree` (a `committed_tree` a session recorded) as the run's state: the generation its session
        committed, which a kill kept from reaching the run's own state file."""
        write_atomic(self.path / STATE_FILE, state_bytes(tree))

    def committed_tree(self, state: RunState) -> dict[str, Any]:
        """What `commit` writes: `state` with each table's length, rows and digest as written so far."""
        tallies = {name: self._tally(name) for name in self.headers()}
        return {**state.to_tree(), "table_bytes": {n: t.size for n, t in tallies.items()},
                "table_rows": {n: t.rows for n, t in tallies.items()},
                "table_digests": {n: t.digest.hexdigest() for n, t in tallies.items()}}

    def state(self) -> RunState | None:
        """The last committed state, brought to the current schema, or None if no generation has finished."""
        path = self.path / STATE_FILE
        if not path.is_file():
            return None
        tree = read_state(path)
        try:
            return RunState.from_tree(tree, noise_free_run(self.config()))
        except (KeyError, TypeError, AttributeError, ValueError) as err:  # a state of no layout evolver wrote
            raise BadInput(f"The state file {path} does not hold a run's state ({type(err).__name__}: {err}), so "
                           "the run cannot continue from it. Its tables, codes and images are intact; start a new "
                           "run, or restore the file from a backup.") from None

    def roll_back(self) -> RunState | None:
        """Discard whatever a killed run wrote after its last commit; return the committed state. A table
        whose committed part is not as committed (edited, re-saved, cut short) is refused, nothing rewritten."""
        state = self.state()
        tallies = {name: self._committed(name, state) for name in self.headers()}
        for name, tally in tallies.items():
            fd = open_record(self.path / name, os.O_WRONLY)
            try:
                os.ftruncate(fd, tally.size)
            finally:
                os.close(fd)
        self._tallies = tallies
        for partial in self.path.rglob(".*.tmp"):  # files a kill caught inside write_atomic
            partial.unlink()
        return state

    def _committed(self, name: str, state: RunState | None) -> _Tally:
        """The committed part of a table, checked against the length, rows and digest `state` recorded."""
        with os.fdopen(open_record(self.path / name, os.O_RDONLY), "rb") as f:
            if state is None:
                return _Tally(f.readline())
            tally, size = _Tally(b""), state.table_bytes.get(name, -1)  # -1: a table the run never committed
            while tally.size < size and (chunk := f.read(min(1 << 20, size - tally.size))):
                tally.add(chunk, chunk.count(b"\n"))
        tally.rows -= 1  # the header
        wrong = [what for what, recorded, found in (
            ("bytes", size, tally.size), ("rows", state.table_rows.get(name, tally.rows), tally.rows),
            ("SHA-256 digest", state.table_digests.get(name, tally.digest.hexdigest()), tally.digest.hexdigest()))
            if recorded != found]
        if wrong or not state.table_digests and not tally.ends_a_row():
            raise BadInput(
                f"The table {self.path / name} is not as generation {state.generation} committed it (its "
                f"{', '.join(wrong) or 'last row'} differ{'s' if len(wrong) < 2 else ''} from the record: edited, "
                "re-saved by a spreadsheet or an editor, or cut short?), so the run cannot continue from it. Nothing "
                "was rewritten. Restore the table from a backup or a copy of the folder, or start a new run; "
                "`evolver.open_run` still reads it.")
        return tally

    def table(self, name: str, state: RunState | None = None) -> pd.DataFrame:
        """A table as committed in `state` (default: the last committed state): the rows of a generation
        still being written are left out."""
        state = self.state() if state is None else state
        with open(self.path / name, "rb") as f:
            data = f.read(state.table_bytes[name]) if state else f.readline()
        return pd.read_csv(io.BytesIO(data), keep_default_na=False, na_values=["nan"])

    def rows_after(self, name: str, start: int, state: RunState | None) -> tuple[pd.DataFrame, int]:
        """The rows of a table committed in `state` from byte `start` on (0: from the first row), and the
        byte to read from next: a reader that follows a run reads each row once."""
        with open(self.path / name, "rb") as f:
            header = f.readline()
            start, end = max(start, len(header)), state.table_bytes[name] if state else len(header)
            f.seek(start)
            data = f.read(max(end - start, 0))
        return pd.read_csv(io.BytesIO(header + data), keep_default_na=False, na_values=["nan"]), max(end, start)

    def write_best(self, best: Best) -> None:
        """best.png, best_code.npy and best.json: the image the run returns so far."""
        self.write_file("best.png", png_bytes(best.image))
        self.write_file("best_code.npy", npy_bytes(best.code.astype(np.float32)))
        self.write_file("best.json", (json.dumps(best.describe(), indent=2) + "\n").encode())  # null: not known


class _Tally:
    """What a table holds as written: its size in bytes, its rows after the header, and its SHA-256 digest,
    kept as rows are appended so that a commit costs what it adds."""

    def __init__(self, header: bytes):
        self.size, self.rows, self.digest, self.last = len(header), 0, hashlib.sha256(header), header[-1:]

    def add(self, data: bytes, rows: int) -> None:
        self.size += len(data)
        self.rows += rows
        self.digest.update(data)
        self.last = data[-1:] or self.last

    def ends_a_row(self) -> bool:
        return self.last == b"\n"


def _csv_field(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return repr(float(value))  # round-trips exactly
    return str(value)
