"""Image files: reading them as tensors (reference sets, template targets) and the one PNG encoder."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from evolver_common.errors import BadInput

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`images` (n, 3, H, W) resized to `size` (H', W') with antialiasing, as the neurons resize."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)


def read_image(path: str | Path, what: str = "Image") -> torch.Tensor:
    """The image file at `path` as (1, 3, H, W) RGB in [0, 1]; BadInput naming `what` if it can't be read."""
    try:
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    except FileNotFoundError:
        raise BadInput(f"{what} {path} does not exist.") from None
    except (UnidentifiedImageError, OSError) as err:
        raise BadInput(f"{what} {path} could not be read as an image ({err}); "
                       f"readable formats: {', '.join(IMAGE_SUFFIXES)}.") from None
    return torch.from_numpy(pixels).permute(2, 0, 1)[None]


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def png_bytes(image: np.ndarray | torch.Tensor) -> bytes:
    """A PNG file's contents: of (H, W, 3) uint8, or of (3, H, W) in [0, 1]."""
    pixels = to_uint8(image) if isinstance(image, torch.Tensor) else image
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
