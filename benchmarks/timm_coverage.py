"""Which timm model families evolver can read a unit of: one small model a family, random weights.

    python benchmarks/timm_coverage.py [--families resnet vision_transformer ...] [--smoke]

For each timm model module (a family: resnet, vision_transformer, swin_transformer, ...) the smallest-named
model is built with random weights, and one unit of its last feature stage and one of its first
(timm's `feature_info`; without it, graph nodes at 90% and 25% of the way) are read for two images.
Each family then works, is refused with a message (a BadInput naming why), or crashes (any other
exception: a bug). Prints a line a family and the counts.
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import timm  # noqa: E402
import torch  # noqa: E402

import neurons  # noqa: E402
from evolver_common import BadInput  # noqa: E402

# Name parts of the small members of a family, smallest first.
SMALL = ("atto", "femto", "pico", "nano", "tiny", "xxs", "xs", "mini", "small", "s16", "18", "b0", "s", "t", "b", "")
SMOKE_FAMILIES = ("resnet", "vision_transformer")


def smallest(family: str) -> str | None:
    """The first model of `family`, in order of SMALL, that takes no pretrained-only config."""
    names = sorted(timm.list_models(module=family))
    for part in SMALL:
        for name in names:
            if f"_{part}" in name or name.endswith(part) and part:
                return name
    return names[0] if names else None


def stages(model: str) -> list[str]:
    """The last and first feature stages of `model` (timm's feature_info, where its names are layers),
    else readable graph nodes 90% and 25% of the way through."""
    network = timm.create_model(model, pretrained=False)
    info = getattr(network, "feature_info", None)
    modules = {name for name, _ in network.named_modules() if name}
    names = [entry["module"] for entry in info if entry.get("module") in modules] if isinstance(info, list) else []
    if len(names) < 2:
        nodes = [layer.name for layer in neurons.list_layers(model) if layer.units is not None]
        names = [nodes[len(nodes) // 4], nodes[int(len(nodes) * 0.9)]] if nodes else []
    return [names[-1], names[0]] if names else []


def try_family(family: str) -> tuple[str, str, str]:
    """(model, outcome: works | refused | crashed, detail)."""
    model = smallest(family)
    if model is None:
        return "-", "refused", "no model in this family"
    try:
        read = []
        for layer in stages(model):
            neuron = neurons.create(f"{model}:{layer}:unit0", weights="random", precision="fp32")
            responses = neuron(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
            if responses.shape != (2,):
                raise RuntimeError(f"responses of shape {responses.shape}")
            layout = getattr(neuron, "layout", None)  # None in evolver before token layouts: for "before" figures
            read.append(f"{layer} ({layout.describe() if layout else neuron.layer_shape})")
        return model, "works", "; ".join(read)
    except BadInput as err:
        return model, "refused", str(err).split(". ")[0]
    except Exception as err:  # noqa: BLE001 - the point is to count what crashes
        return model, "crashed", f"{type(err).__name__}: {str(err)[:160]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", help="timm modules to try (default: every one)")
    parser.add_argument("--smoke", action="store_true", help="two families: checks that the benchmark runs")
    args = parser.parse_args()
    families = SMOKE_FAMILIES if args.smoke else (args.families or timm.list_modules())
    warnings.simplefilter("ignore")
    counts: dict[str, int] = {}
    started = time.time()
    for family in families:
        model, outcome, detail = try_family(family)
        counts[outcome] = counts.get(outcome, 0) + 1
        print(f"{family:<28} {model:<44} {outcome:<8} {detail}", flush=True)
    print(f"\n{len(families)} families: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in ("works", "refused", "crashed"))
          + f" ({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
