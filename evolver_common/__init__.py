"""What `neurons`, `generators` and `evolver` share without importing one another.

DESIGN.md keeps `neurons` and `generators` independent of each other and of `evolver`;
the few things all three need (the bad-input error, reading weight files, choosing a
device and precision) live here, below all three.
"""
from evolver_common.compute import autocast, resolve_device, resolve_precision
from evolver_common.downloads import reachable
from evolver_common.errors import BadInput, RigError, nearest
from evolver_common.files import FolderLock, open_record, refuse_links, write_atomic
from evolver_common.state_files import apply_state_dict, load_state_file, seeded_init

__all__ = [
    "BadInput", "RigError", "nearest", "load_state_file", "apply_state_dict", "seeded_init",
    "resolve_device", "resolve_precision", "autocast", "reachable", "write_atomic", "FolderLock",
    "open_record", "refuse_links",
]
