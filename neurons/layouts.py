"""How a layer's output holds its units: a vector (C,), a grid (C, H, W) or (H, W, C), or tokens (N, C).

CNN layers give (C, H, W). Channels-last networks (timm's Swin and others whose `output_fmt` is 'NHWC',
torchvision's Swin) give (H, W, C) after their layers, which `ModelReader.read` turns to (C, H, W).
Transformers give tokens: `prefix` tokens (a class token, a distillation token, register tokens) and
then the patches of an H × W grid, row by row. The model says how many prefix tokens it has and its
patch grid where it can (timm's `num_prefix_tokens` and `patch_embed.grid_size`, torchvision's
`class_token`, `image_size` and `patch_size`); otherwise the largest square grid that leaves at most 8
prefix tokens is taken.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

MAX_PREFIX = 8  # more tokens before a square grid than this: not a patch layout we can read


@dataclass(frozen=True)
class Layout:
    """One layer's output per image, as a unit is read from it (after `ModelReader.read`)."""

    kind: str  # 'vector' (C,) | 'grid' (C, H, W) | 'tokens' (N, C)
    units: int
    grid: tuple[int, int] | None = None  # (H, W): the spatial grid, or the tokens' patch grid
    prefix: int = 0  # tokens before the patch tokens
    class_token: bool = False  # the first token is a class token
    channels_last: bool = False  # the network gives (H, W, C), read as (C, H, W)

    def describe(self) -> str:
        """What `evolver layers` shows of the layout: '7×7', or '14×14 patches + class token'."""
        if self.kind == "vector":
            return "-"
        grid = f"{self.grid[1]}×{self.grid[0]}"
        if self.kind == "grid":
            return grid + (" (channels-last)" if self.channels_last else "")
        extra = ["class token" if self.class_token else "", f"{self.prefix - self.class_token} more prefix"
                 if self.prefix - self.class_token else ""]
        return " + ".join([f"{grid} patches", *(e for e in extra if e)])


@dataclass(frozen=True)
class ModelFacts:
    """What a network says of its layers' layouts (None: it does not say)."""

    channels_last: bool = False
    prefix: int | None = None
    class_token: bool | None = None
    grid: tuple[int, int] | None = None


def model_facts(network: nn.Module) -> ModelFacts:
    """The layout facts of a timm, torchvision or other network, from its attributes."""
    channels_last = getattr(network, "output_fmt", None) == "NHWC" or (
        type(network).__name__ == "SwinTransformer" and type(network).__module__.startswith("torchvision"))
    grid = getattr(getattr(network, "patch_embed", None), "grid_size", None) \
        or getattr(getattr(network, "stem", None), "grid_size", None)
    prefix = getattr(network, "num_prefix_tokens", None)
    class_token = None
    if hasattr(network, "cls_token"):
        class_token = network.cls_token is not None
    if hasattr(network, "class_token") and hasattr(network, "patch_size") and hasattr(network, "image_size"):
        class_token, prefix = True, 1  # torchvision's VisionTransformer
        grid = (network.image_size // network.patch_size,) * 2
    return ModelFacts(channels_last, prefix, class_token, tuple(grid) if grid is not None else None)


def layout_of(shape: tuple[int, ...], facts: ModelFacts, module: nn.Module | None = None) -> Layout | None:
    """The layout of a layer whose output per image has `shape`, produced by `module` (None for a graph
    node that is not a module); None when no unit can be read from it."""
    if len(shape) == 1:
        return Layout("vector", shape[0])
    if len(shape) == 3:
        if facts.channels_last and not isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
            return Layout("grid", shape[2], (shape[0], shape[1]), channels_last=True)
        return Layout("grid", shape[0], (shape[1], shape[2]))
    if len(shape) == 2:
        return _tokens(shape[0], shape[1], facts)
    return None


def _tokens(n: int, channels: int, facts: ModelFacts) -> Layout | None:
    if facts.grid is not None and facts.prefix is not None and facts.prefix + facts.grid[0] * facts.grid[1] == n:
        prefix, grid = facts.prefix, facts.grid
    else:  # a stage that pooled its tokens, or a model that does not say: the largest square grid
        side = math.isqrt(n)
        prefix, grid = n - side * side, (side, side)
        if side == 0 or prefix > MAX_PREFIX:
            return None
    class_token = prefix > 0 and facts.class_token is not False
    return Layout("tokens", channels, grid, prefix, class_token)
