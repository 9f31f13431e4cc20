"""The bf16 ranking check behind `--precision auto`, for a list of model layers (random weights
unless bundled): mean Spearman of bf16 against fp32 responses and top-10 overlap on a probe
population of 40 images, and the verdict.

    python benchmarks/bf16_ranking.py [MODEL:LAYER ...] [--device auto|cpu|cuda] [--smoke]
"""
from __future__ import annotations

import argparse

import torch

from evolver_common import resolve_device
from evolver_common.compute import bf16_is_native
from neurons.cnn import ModelReader
from neurons.precision import check_bf16

LAYERS = ["stimnet:relu2", "stimnet:classifier", "resnet18:layer2", "resnet50:layer2", "resnet50:layer4",
          "resnet50:fc", "alexnet:classifier.6", "vgg16:features.29"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("layers", nargs="*", default=LAYERS, metavar="MODEL:LAYER")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--smoke", action="store_true", help="stimnet's relu2 alone: checks that the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        args.layers = LAYERS[:1]
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}; bf16 native here: {bf16_is_native(device)}")
    for spec in args.layers:
        model, layer = spec.split(":")
        reader = ModelReader(model, [layer], "pretrained" if model == "stimnet" else "random", str(device), "fp32")
        verdict = check_bf16(reader.network, device, reader.input_config.size)
        print(f"{spec:<24} Spearman {verdict['spearman']:.4f}  top-10 overlap {verdict['top10_overlap']:.4f}  "
              f"-> {'bf16' if verdict['bf16'] else 'fp32'}")


if __name__ == "__main__":
    main()
