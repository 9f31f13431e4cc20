"""What `neurons`, `generators` and `evolver` share without importing one another.

DESIGN.md keeps `neurons` and `generators` independent of each other and of `evolver`;
the few things all three need (the bad-input error, reading weight files, choosing a
device and precision) live here, below all three.
"""
import importlib

from evolver_common.errors import BadInput, Interrupted, RigError, nearest

# Imported when first named: `compute` and `state_files` load torch, which a command's --help never needs.
_LAZY = {"autocast": "compute", "resolve_device": "compute", "resolve_precision": "compute", "reachable": "downloads",
         "FolderLock": "files", "open_record": "files", "refuse_links": "files", "write_atomic": "files",
         "apply_state_dict": "state_files", "load_state_file": "state_files", "seeded_init": "state_files"}

__all__ = ["BadInput", "Interrupted", "RigError", "nearest", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'evolver_common' has no attribute '{name}'")
    return getattr(importlib.import_module(f"evolver_common.{_LAZY[name]}"), name)
