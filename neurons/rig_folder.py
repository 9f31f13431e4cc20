"""`folder:PATH`, XDream's file exchange (neurons.recorded's docstring): images written as
`block{NNN}_{iii}_{imageid}.png`, responses read from the block's .mat or .h5 file (neurons.rig_files)."""
from __future__ import annotations

import json
import os
import stat
import time
import uuid
from pathlib import Path

import numpy as np

from evolver_common import BadInput, write_atomic
from evolver_common.files import is_regular
from evolver_common.images import png_bytes
from neurons.recorded import Block, RecordedNeuron
from neurons.rig_files import exchange_block, read_responses

class FolderRig(RecordedNeuron):
    """XDream's file-exchange protocol (see the module docstring).

    A response file is read once it is whole: its size and time unchanged across two polls (a rig may
    write it in place, as MATLAB's `save` and h5py do, and pause mid-file). One that does not read is read
    again each time it changes, until the block's time-out; only a file still unreadable then is set aside
    (`.malformed`). A response file that is there before its block's images are written is not this
    block's answer: it is set aside (`.early`). Each run claims the folders with a session id
    (`evolver-session.json`, and in the run's state): block files left by another session are refused
    before the first block, this run's own from an interrupted block moved to `stale/`."""

    kind = "folder"
    options = {**RecordedNeuron.options, "scores": str}
    poll_seconds = 0.02
    SESSION_FILE = "evolver-session.json"

    def __init__(self, spec: str, **kwargs):
        super().__init__(spec, **kwargs)
        self.folder = Path(self.address)
        self.scores = Path(self.settings.get("scores", self.address))
        for folder, what in ((self.folder, "exchange"), (self.scores, "scores")):
            if not folder.is_dir():
                raise BadInput(f"'{spec}': the {what} folder {folder} does not exist. Create it and point the rig "
                               "at it.")
        self.session = uuid.uuid4().hex
        self.claimed = False

    def state_dict(self) -> dict:
        return {**super().state_dict(), "session": self.session}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.session = str(state.get("session", self.session))

    def image_name(self, block: Block, index: int) -> str:
        return f"block{block.number:03d}_{index:03d}_{block.ids[index]}.png"

    def exchange(self, block: Block) -> dict[str, np.ndarray]:
        if not self.claimed:
            self._claim()
        for early in self._response_files(block):
            if os.path.lexists(early):  # written before the images it would answer: not their responses
                aside = early.with_name(early.name + ".early")
                early.replace(aside)
                self.log.note("early", f"block {block.number}: {early.name} was there before the block's images were "
                                       f"written, so it cannot answer them; moved aside as {aside.name}")
        names = [self.image_name(block, i) for i in range(len(block.ids))]
        for name, image in zip(names, block.images):
            write_atomic(self.folder / name, png_bytes(image))
        for attempt in range(self.retries + 1):
            answered = self._wait(block, names)
            if answered is not None:
                return answered
            self._timed_out(block, attempt)
        raise self._gave_up(block)

    def _response_files(self, block: Block) -> list[Path]:
        return [self.scores / f"block{block.number:03d}.{suffix}" for suffix in ("mat", "h5")]

    def _claim(self) -> None:
        """Before this process's first block: refuse the folders if they hold another session's blocks
        at or after the next one (their responses would be taken for this run's)."""
        marker = self.folder / self.SESSION_FILE
        try:  # a marker that is not a regular file (a FIFO would block the read) is no session's
            ours = is_regular(marker) and json.loads(marker.read_text()).get("session") == self.session
        except (OSError, ValueError, AttributeError):
            ours = False
        later = sorted({p for folder in (self.folder, self.scores) for p in folder.iterdir()
                        if (n := exchange_block(p.name)) is not None and n >= self.next_block})
        if later and not ours:
            shown = ", ".join(p.name for p in later[:4]) + (f" and {len(later) - 4} more" if len(later) > 4 else "")
            raise BadInput(f"The exchange folder {self.folder} holds block files of another session ({shown}), from "
                           f"block {self.next_block} on: the rig would answer them, or their responses be taken for "
                           "this run's. Move them away, or give the run an empty folder.")
        for path in later:  # this run's own, from a block it was stopped in: kept, out of the way
            (path.parent / "stale").mkdir(exist_ok=True)
            path.replace(path.parent / "stale" / path.name)
        write_atomic(marker, json.dumps({"session": self.session, "pid": os.getpid(),
                                         "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        self.claimed = True

    def _wait(self, block: Block, names: list[str]) -> dict[str, np.ndarray] | None:
        """The block's responses once a response file reads, or None at the time-out, when a file that never
        read is set aside."""
        # a rig may start after evolver: until it has answered once, wait connect_timeout (a response file that
        # appears, even one that does not read, shows it is there: its own time-out applies from then on)
        deadline = time.monotonic() + (self.timeout if self.answered else max(self.timeout, self.connect_timeout))
        seen: dict[Path, tuple[int, int]] = {}  # file -> its size and time at the last poll
        failed: dict[Path, tuple[tuple[int, int], str]] = {}  # file -> (size and time when it failed, why)
        while time.monotonic() < deadline:
            for path in self._response_files(block):
                try:
                    info = os.lstat(path)
                except FileNotFoundError:
                    continue
                signature = (info.st_size, info.st_mtime_ns)
                if path not in seen and not self.answered:  # the rig is there: its time-out, not the wait for it
                    deadline = min(deadline, time.monotonic() + self.timeout)
                if not stat.S_ISREG(info.st_mode):  # a link, FIFO or device: no rig writes one
                    self._set_aside(block, path, "not a regular file")
                    continue
                if seen.get(path) != signature:  # new, or still being written
                    seen[path] = signature
                    continue
                if failed.get(path, (None,))[0] == signature:  # unreadable, and unchanged since
                    continue
                try:
                    return self.answers(path, block, names)
                except Exception as err:  # noqa: BLE001 - a rig's file fails to parse in many ways; all mean "not readable"
                    failed[path] = (signature, f"{type(err).__name__}: {str(err)[:200]}")
            time.sleep(self.poll_seconds)
        for path, (_, why) in failed.items():  # unreadable to the end: the rig's fault
            if os.path.lexists(path):
                self._set_aside(block, path, why)
        return None

    def answers(self, path: Path, block: Block, names: list[str]) -> dict[str, np.ndarray]:
        """{image id: responses} of the response file `path` for `block` (its images' file `names`); raises
        when the file does not read (neurons.rig_files.read_responses)."""
        ids, values = read_responses(path, block.ids)
        by_name = {**dict(zip(names, block.ids)), **{n[:-4]: i for n, i in zip(names, block.ids)}}
        return self._match(block, [by_name.get(i, i) for i in ids], values)

    def _set_aside(self, block: Block, path: Path, why: str) -> None:
        aside = path.with_name(path.name + ".malformed")
        self.log.note("malformed", f"block {block.number}: {path.name} could not be read ({why}); set aside as "
                                   f"{aside.name}, waiting for a readable one")
        path.replace(aside)  # kept for the lab, out of the way
