"""Weight files: .safetensors or .pth, applied strictly with a readable mismatch report."""
from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

from evolver_common.errors import BadInput

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")

# Checkpoints saved by training scripts often wrap the weights in one of these keys.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "generator")


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from `path` (.safetensors, or a torch file loaded weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(
            f"The weights file {path} does not exist. Give the path of a .safetensors or .pth "
            "file, or use 'random' (seeded random weights) or 'pretrained'."
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the file's format is the user's to fix, whatever the parser says
        raise BadInput(
            f"The weights file {path} could not be read ({type(err).__name__}: {err}). Valid weight "
            f"files are {', '.join(WEIGHT_SUFFIXES)} holding a state dict of tensors."
        ) from None
    for key in _WRAPPER_KEYS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadInput(f"The weights file {path} does not hold a state dict (a mapping of names to tensors).")
    return {k.removeprefix("module."): v for k, v in state.items()}


def apply_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load `state` into `module` strictly; on any mismatch raise BadInput listing the keys.

    `source` names where the weights came from (a path or cache file), for the message.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in set(expected) & set(state) if state[k].shape != expected[k].shape
    )
    if missing or unexpected or wrong_shape:
        parts = [
            f"{label} ({len(keys)}): {_clip(keys)}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
            if keys
        ]
        raise BadInput(
            f"The weights in {source} do not match the {type(module).__name__} they were given to: "
            + "; ".join(parts) + ". Use weights saved from the same architecture, or 'random'."
        )
    module.load_state_dict(state, strict=True)


def _clip(keys: list[str], n: int = 6) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", … and {len(keys) - n} more" if len(keys) > n else "")


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Make module construction inside the block draw its random weights from `seed`.

    The caller's global torch RNG state is restored afterwards.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def parameters_digest(network: nn.Module) -> str:
    """A short fingerprint of a network's weights, so that a record tells two versions apart."""
    digest = hashlib.sha1()
    for key, tensor in network.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                      if tensor.numel() else b"")
    return digest.hexdigest()[:12]


def file_weights(path: str | Path, network: nn.Module) -> str:
    """How a record names weights loaded from a file: its path and the loaded weights' fingerprint (so that
    a resume notices a file changed under the same name)."""
    return f"{Path(path).resolve()} (weights sha1 {parameters_digest(network)})"
