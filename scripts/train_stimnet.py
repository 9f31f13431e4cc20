"""Reproduce the bundled stimnet weights: train on the procedural corpus, test on held-out stimuli.

    python scripts/train_stimnet.py            # writes neurons/weights/stimnet.safetensors and .json
    python scripts/train_stimnet.py --smoke --out /tmp/net.safetensors   # 2 steps: checks that it runs

The training stream (corpus seed 1) and the test set (corpus seed 999, 6,000 stimuli) never
share a batch seed, so the accuracy is held out.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from safetensors.torch import save_file

from generators.corpus import FAMILIES, stimuli
from evolver.training.stimnet import accuracy, train_classifier
from neurons.stimnet import INPUT, WEIGHTS_DIR, normalise

TEST_SEED, TEST_SIZE = 999, 6000
SMOKE_STEPS, SMOKE_TEST_SIZE = 2, 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", default="stimnet")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0, help="weights seed")
    parser.add_argument("--corpus-seed", type=int, default=1)
    parser.add_argument("--out", default=None, help="weights file (default neurons/weights/<architecture>.safetensors)")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_STEPS} steps, {SMOKE_TEST_SIZE} test stimuli: "
                        "checks that the script runs (needs --out: the bundled weights are never overwritten)")
    args = parser.parse_args()
    if args.smoke and not args.out:
        parser.error("--smoke trains a network that names nothing: give --out, away from the bundled weights.")
    steps, test_size = (SMOKE_STEPS, SMOKE_TEST_SIZE) if args.smoke else (args.steps, TEST_SIZE)
    started = time.time()
    network = train_classifier(args.architecture, steps, args.seed, args.corpus_seed)
    test = stimuli(test_size, TEST_SEED)
    held_out = accuracy(lambda x: network(normalise(x)), test.images, test.family)
    out = args.out or str(WEIGHTS_DIR / f"{args.architecture}.safetensors")
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, out)
    card = {
        "architecture": args.architecture, "classes": list(FAMILIES), "input": INPUT,
        "command": " ".join(["python", *sys.argv]), "steps": steps, "batch_size": 128,
        "weights_seed": args.seed, "corpus_seed": args.corpus_seed,
        "held_out": {"corpus_seed": TEST_SEED, "images": test_size, "accuracy": round(held_out, 4)},
        "training_seconds": round(time.time() - started),
    }
    with open(out.removesuffix(".safetensors") + ".json", "w") as f:
        json.dump(card, f, indent=2)
    print(json.dumps(card, indent=2))


if __name__ == "__main__":
    main()
