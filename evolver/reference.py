"""Reference images (XDream): scored once, so each generation can report best evolved / best reference."""
from __future__ import annotations

from pathlib import Path

import torch

from evolver.datasets import ARRAY_SUFFIXES, load_images
from evolver_common import BadInput
from evolver_common.images import IMAGE_SUFFIXES, read_image, resize
# the reference images are held in memory and shown again and again: 5,000 take 250 MB at 64 pixels a side
MAX_PROCEDURAL = 5000
REFERENCE_HELP = ("--reference takes a folder of images, an N×H×W×3 array file (.npy, .h5) or procedural:N[:SEED] "
                  f"(N corpus stimuli, 1 to {MAX_PROCEDURAL}; SEED from 0).")


def load_reference(spec: str, size: int) -> tuple[torch.Tensor, list[str]]:
    """Reference images (n, 3, size, size) in [0, 1] and their names, from a folder or the corpus."""
    if spec.startswith("procedural:"):
        from generators.corpus import stimuli

        try:
            parts = [int(v) for v in spec.split(":")[1:]]
            n, seed = parts[0], (parts[1] if len(parts) > 1 else 0)
            if not 1 <= n <= MAX_PROCEDURAL or seed < 0 or len(parts) > 2:
                raise ValueError
        except (ValueError, IndexError):
            raise BadInput(f"Malformed reference '{spec}'. {REFERENCE_HELP}") from None
        batch = stimuli(n, seed, size=size)
        return batch.images, [f"{label}_{i}" for i, label in enumerate(batch.labels())]
    if Path(spec).suffix in ARRAY_SUFFIXES:
        images = load_images(spec)
        return resize(images, (size, size)).clamp(0, 1), [f"image_{i}" for i in range(len(images))]
    folder = Path(spec)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise BadInput(f"No reference images in '{spec}' (looked for {', '.join(IMAGE_SUFFIXES)}). {REFERENCE_HELP}")
    images = [resize(read_image(path, "Reference image"), (size, size)) for path in files]
    return torch.cat(images).clamp(0, 1), [str(p.relative_to(folder)) for p in files]
