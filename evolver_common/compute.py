"""Device and numeric precision: one place decides what is fastest and still correct."""
from __future__ import annotations

import contextlib
import os

import torch

from evolver_common.errors import BadInput

PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` is the GPU when one is present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.split(":")[0] not in ("cpu", "cuda"):
        raise BadInput(f"Unknown device '{device}'. Valid devices: {', '.join(DEVICES)} (or cuda:N).")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(f"Device '{device}' was asked for but torch sees no CUDA GPU here. Use 'cpu' or 'auto'.")
    return torch.device(device)


def bf16_is_native(device: torch.device) -> bool:
    """Whether bf16 matrix work runs in hardware here (AVX512-BF16/AMX on CPU, Ampere+ on GPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


# Where set (fp32 or bf16), what `auto` means on this machine: runs the tests, or a lab's whole
# pipeline, at one precision whatever the CPU, without changing any command.
PRECISION_VARIABLE = "EVOLVER_PRECISION"


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` is bf16 where the hardware runs it natively (3-8x faster here), else fp32, unless the
    EVOLVER_PRECISION environment variable names one."""
    if precision not in PRECISIONS:
        raise BadInput(f"Unknown precision '{precision}'. Valid precisions: {', '.join(PRECISIONS)}.")
    if precision != "auto":
        return precision
    forced = os.environ.get(PRECISION_VARIABLE, "").strip().lower()
    if forced in ("", "auto"):
        return "bf16" if bf16_is_native(device) else "fp32"
    if forced not in PRECISIONS:
        raise BadInput(f"The environment variable {PRECISION_VARIABLE}={forced!r} is not a precision; set it to "
                       "fp32 or bf16 (what --precision auto then means), or unset it.")
    return forced


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context for a resolved precision (a no-op for fp32)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def small_linear_algebra() -> contextlib.AbstractContextManager:
    """One OpenBLAS thread for the optimizers' small matrices (a 100×100 eigh is ~1 ms on one thread).

    OpenBLAS's threads spin after each call and fight torch's OpenMP threads for the cores: on 2
    cores, a DCGAN → stimnet run took 2.8× as long with them. An MKL is left alone: where numpy has
    one, torch's matrix products may share it.
    """
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(internal_api="openblas").limit(limits=1)
