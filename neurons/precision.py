"""Whether bf16 keeps a network's ranking of images: what `--precision auto` decides by.

bf16 is 2-3x faster on CPUs with AMX and on recent GPUs, but an evolution only needs the order of
its population's responses to be right. The check shows a probe population of 40 smooth random
images in fp32 and in bf16 and compares, unit by unit (channels at the centre of each read layer,
up to 64 a layer), the Spearman correlation of the two and the overlap of their top 10. bf16 is
used when the mean Spearman is ≥ 0.99 and the mean top-10 overlap ≥ 0.95; otherwise fp32. The
verdict is cached per model, layers, weights, device and torch version (in ~/.cache/evolver). It
also counts ties among each unit's 10 best probe responses, with the read layers in fp32 (as they
run) and in bf16: what bf16's 8-bit resolution would cost near an optimum.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
from pathlib import Path

import torch

from evolver_common import autocast
from evolver_common.files import write_atomic

MIN_SPEARMAN, MIN_TOP_OVERLAP = 0.99, 0.95
CHECK_VERSION = 2  # 2: with the top-10 ties; verdicts cached by earlier versions are checked again
PROBE_IMAGES, TOP_K, UNITS_PER_LAYER = 40, 10, 64


def cache_file() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "evolver" / "precision.json"


def probe_images(size: tuple[int, int]) -> torch.Tensor:
    """(40, 3, H, W) in [0, 1]: colour fields from 6×6 noise, smooth like generator images, seeded."""
    coarse = torch.rand(PROBE_IMAGES, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    return torch.nn.functional.interpolate(coarse, size=size, mode="bicubic", align_corners=False).clamp(0, 1)


def _ranks(x: torch.Tensor) -> torch.Tensor:
    return x.argsort(0).argsort(0).double()


def _units(layer: torch.Tensor) -> torch.Tensor:
    """Responses (n, units) of up to 64 channels of a layer, at the centre of a spatial map."""
    if layer.ndim == 4:
        layer = layer[:, :, layer.shape[2] // 2, layer.shape[3] // 2]
    return layer.flatten(1)[:, :: max(1, layer.shape[1] // UNITS_PER_LAYER)].double()


def agreement(fp32: torch.Tensor, bf16: torch.Tensor) -> tuple[float, float]:
    """Mean Spearman correlation and mean top-10 overlap, over units that vary, of two (n, units)."""
    varies = fp32.std(0) > 0
    if not varies.any():
        return 1.0, 1.0
    a, b = _ranks(fp32[:, varies]), _ranks(bf16[:, varies])
    a, b = a - a.mean(0), b - b.mean(0)
    spearman = ((a * b).sum(0) / (a.norm(dim=0) * b.norm(dim=0))).mean().item()
    top_a, top_b = fp32[:, varies].topk(TOP_K, dim=0).indices, bf16[:, varies].topk(TOP_K, dim=0).indices
    overlap = sum(len(set(top_a[:, u].tolist()) & set(top_b[:, u].tolist())) for u in range(top_a.shape[1]))
    return spearman, overlap / (TOP_K * top_a.shape[1])


def top_ties(responses: torch.Tensor) -> float:
    """Mean over units of the tied values among a unit's 10 largest responses (n, units), zeros (a
    silent unit after a ReLU) left out: 0 when the resolution tells the best images apart."""
    top = responses.topk(TOP_K, dim=0).values
    ties = [len(values) - len(set(values)) for values in ([v for v in top[:, u].tolist() if v != 0]
                                                          for u in range(top.shape[1]))]
    return float(sum(ties) / len(ties))


def check_bf16(network: torch.nn.Module, device: torch.device, size: tuple[int, int]) -> dict:
    """The check itself: `network` maps images to {layer: activations}. Beside the verdict, the ties
    among each unit's top 10 in bf16 when the read layers run in fp32 (as they do) and in bf16 too."""
    images = probe_images(size).to(device).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        exact = network(images)
        with autocast("bf16", device):
            rounded = network(images)
            with fp32_reads(network, False):
                bf16_read = network(images)
    figures = [agreement(_units(exact[k].float()), _units(rounded[k].float())) for k in exact]
    spearman = min(f[0] for f in figures)
    overlap = min(f[1] for f in figures)
    ties = {name: max(top_ties(_units(outputs[k].float())) for k in outputs)
            for name, outputs in (("top10_ties_fp32_read", rounded), ("top10_ties_bf16_read", bf16_read))}
    return {"spearman": round(spearman, 4), "top10_overlap": round(overlap, 4),
            **{k: round(v, 2) for k, v in ties.items()}, "bf16": spearman >= MIN_SPEARMAN and overlap >= MIN_TOP_OVERLAP}


@contextlib.contextmanager
def fp32_reads(network: torch.nn.Module, enabled: bool):
    """Within: the network's fp32 read layers (`neurons.cnn.Float32`) run as the rest does, or in fp32."""
    layers = [m for m in network.modules() if hasattr(m, "fp32")]
    before = [m.fp32 for m in layers]
    for m in layers:
        m.fp32 = enabled
    try:
        yield
    finally:
        for m, was in zip(layers, before):
            m.fp32 = was


def _cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def bf16_verdict(key: dict, network: torch.nn.Module, device: torch.device, size: tuple[int, int]) -> dict:
    """The cached verdict for `key` (model, layers, weights), or a fresh check that is then cached."""
    name = json.dumps({**key, "check": CHECK_VERSION, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
                       "torch": torch.__version__}, sort_keys=True)
    path = cache_file()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if name not in cache:
        cache[name] = check_bf16(network, device, size)
        try:
            write_atomic(path, json.dumps(cache, indent=1).encode())
        except OSError:  # a read-only home: check again next time
            pass
    return cache[name]
