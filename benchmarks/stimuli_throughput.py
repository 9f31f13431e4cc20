"""Images per second of the procedural stimulus corpus, against what DCGAN training consumes.

    python benchmarks/stimuli_throughput.py [--smoke]
"""
import argparse
import time

import torch

from generators.corpus import FAMILIES, stimuli


def rate(n: int, repeats: int = 3, **kwargs) -> float:
    stimuli(n, 0, **kwargs)  # warm-up
    started = time.perf_counter()
    for k in range(repeats):
        stimuli(n, k + 1, **kwargs)
    return n * repeats / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="batches of 24 and 12: checks that the benchmark runs; "
                        "its figures mean nothing")
    args = parser.parse_args()
    batch, family_batch = (24, 12) if args.smoke else (1024, 256)
    print(f"torch threads: {torch.get_num_threads()}")
    overall = rate(batch)
    print(f"all families, batches of {batch}: {overall:,.0f} images/s")
    for family in FAMILIES:
        print(f"  {family:<13} {rate(family_batch, families=(family,)):>9,.0f} images/s")
    # One DCGAN step at batch 128 takes about 1.1 s here (bf16, 2 cores): ~120 images/s consumed.
    print(f"corpus time per 128-image training batch: {128 / overall * 1000:.1f} ms")


if __name__ == "__main__":
    main()
