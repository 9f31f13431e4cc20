"""The run folder (docs/run-folder.md): what a run leaves on disk, and how it survives being killed.

`RunDirectory` is the only reader and writer of a run folder's records. Whole files (codes, images, config,
state) are written to a temporary name and renamed. The tables grow by appending, so that a generation
costs the same at 10 or 10,000 generations; their committed length is kept in `state/state.npz`, which is
written last, and a resumed run cuts them back to it. The state file is therefore the commit point: a
generation exists once its state is written, and everything of a later one is discarded.
"""
from __future__ import annotations

import io
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evolver.run_state import Best, RunState, noise_free_run
from evolver.tables import BY_NAME, Features, Table, headers
from evolver_common import BadInput, write_atomic
from evolver_common.images import png_bytes
from evolver_common.secrets import redact

REQUIRED_TABLES = ("generations.csv", "scores.csv")
STATE_FILE = Path("state") / "state.npz"
LOCK_FILE = ".lock"  # held by the process writing the run; names it


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


class RunDirectory:
    """One run's folder: config.json, the tables, codes/, images/, best.*, state/ (docs/run-folder.md)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = None
        self._headers: dict[str, tuple[str, ...]] | None = None

    def lock(self) -> None:
        """Hold the folder for this process until `release` (or its exit): a second process that would
        write the same run is refused, naming the first."""
        try:
            import fcntl
        except ImportError:  # no advisory locks on this system (Windows): nothing to hold
            return
        handle = open(self.path / LOCK_FILE, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise BadInput(f"The run folder {self.path} is in use by {holder}. Two processes writing one run "
                           "would mix their generations: wait for it to finish or stop it, then resume.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"evolver process {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        self._lock = handle

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @classmethod
    def create(cls, path: str | Path, config: dict[str, Any], features: Features = Features()) -> RunDirectory:
        """A new run folder, locked, with its config and the headers of the tables a run with `features` has."""
        run = cls(path)
        if run.path.exists() and any(run.path.iterdir()):
            raise BadInput(
                f"The output folder {run.path} already exists and is not empty. Give a new --out "
                f"folder, or continue that run with `evolver run --resume {run.path}`."
            )
        run.path.mkdir(parents=True, exist_ok=True)
        run.lock()
        run.write_config(config)
        run._headers = headers(features)
        for name, header in run._headers.items():
            write_atomic(run.path / name, (",".join(header) + "\n").encode())
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDirectory:
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
        config = json.loads((self.path / "config.json").read_text())
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
                    with open(self.path / name, encoding="utf-8") as f:
                        found[name] = tuple(f.readline().strip().split(","))
            self._headers = found
        return self._headers

    def append(self, table: Table, sources: list[Any]) -> None:
        """Append the rows of `sources` to `table`, in the columns its header has (committed only by the
        next `commit`)."""
        header = self.headers()[table.name]
        text = "".join(",".join(_csv_field(v) for v in table.row(header, s)) + "\n" for s in sources)
        with open(self.path / table.name, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def commit(self, state: RunState) -> None:
        """Make everything written so far part of the run: `state` with the tables' lengths."""
        lengths = {name: (self.path / name).stat().st_size for name in self.headers()}
        tree = {**state.to_tree(), "table_bytes": lengths}
        write_atomic(self.path / STATE_FILE, state_bytes(tree))

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
        """Discard whatever a killed run wrote after its last commit; return the committed state."""
        state = self.state()
        for name in self.headers():
            with open(self.path / name, "rb") as f:
                header = len(f.readline())
            os.truncate(self.path / name, state.table_bytes[name] if state else header)
        for partial in self.path.rglob(".*.tmp"):  # files a kill caught inside write_atomic
            partial.unlink()
        return state

    def table(self, name: str, state: RunState | None = None) -> pd.DataFrame:
        """A table as committed in `state` (default: the last committed state): the rows of a generation
        still being written are left out."""
        state = self.state() if state is None else state
        with open(self.path / name, "rb") as f:
            data = f.read(state.table_bytes[name]) if state else f.readline()
        return pd.read_csv(io.BytesIO(data), keep_default_na=False, na_values=["nan"])

    def write_best(self, best: Best) -> None:
        """best.png, best_code.npy and best.json: the image the run returns so far."""
        self.write_file("best.png", png_bytes(best.image))
        self.write_file("best_code.npy", npy_bytes(best.code.astype(np.float32)))
        self.write_file("best.json", (json.dumps(best.describe(), indent=2) + "\n").encode())  # null: not known


def _csv_field(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return repr(float(value))  # round-trips exactly
    return str(value)
