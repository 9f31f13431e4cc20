"""Measure the bundled world: generator quality and the ground truth of stimnet's class units.

    python scripts/check_bundled.py [--write-card] [--weights PATH --quality-only] [--optimizer NAME]
                                    [--param NAME=VALUE ...] [--seeds N] [--judge corrupted|clean] [--grid PNG]
                                    [--smoke]

1. Generator quality: the Fréchet distance between bundled-DCGAN images and corpus images in
   stimnet's penultimate features (`flatten`, 128-d), beside the same distance for an untrained
   DCGAN and for a second corpus sample (the floor), the share of generated images that
   stimnet classifies with confidence > 0.9, and how varied the images of one family are
   (generated, grouped by stimnet's naming, against the corpus).
2. Ground truth: for every class unit of stimnet, a 100-generation evolution (the default optimizer, or
   --optimizer with its --param values; with --seeds N, N evolutions a unit from seeds unit + 100 k)
   through the bundled DCGAN; its best image is classified by stimnet and by an independent classifier
   (checknet: another architecture and seed, trained here only for this check, on corrupted stimuli so
   that a generator's faint noise and colour washes do not decide its naming; --judge clean trains it on
   clean ones, as before), and its response is compared with the best response among 10,000 corpus
   images; the summary counts each class's evolutions and lists the classes that pass in most of them
   (named by both classifiers; beating the corpus). Beside it, how often the two classifiers agree on
   random samples of the generator: the independent check's ceiling; per family, how often each names
   the generator's own samples of that family as it (what an evolution through this generator can hope
   for); and how well each names held-out stimuli, clean and under nuisances.
With --write-card the figures go into generators/weights/dcgan.json under "quality". --weights
measures a candidate generator (e.g. a train-gan output) instead of the bundled one.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torchvision

import neurons
from evolver import RunConfig, optimizers
from evolver.checks.bundled import (
    JUDGES,
    SMOKE,
    Sizes,
    classes_passing_in_most_evolutions,
    generator_quality,
    ground_truth,
    tally,
    tally_by_class,
)
from evolver_common import BadInput
from generators.dcgan import BUNDLED_WEIGHTS
from generators.corpus import FAMILIES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generations", type=int, default=100)
    parser.add_argument("--weights", default="pretrained", help="DCGAN weights: pretrained (the bundled) or a PATH.")
    parser.add_argument("--optimizer", default=RunConfig().optimizer, help="The ground-truth evolutions' optimizer.")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="A parameter of the optimizer (repeatable), e.g. start=prior.")
    parser.add_argument("--seeds", type=int, default=1, help="Evolutions a class unit (seeds unit + 100 k).")
    parser.add_argument("--judge", choices=list(JUDGES), default="corrupted",
                        help="The independent classifier's training: on corrupted stimuli, or clean ones (as before).")
    parser.add_argument("--grid", help="Save the evolved best images to this PNG: a row a class unit, a column a seed.")
    parser.add_argument("--quality-only", action="store_true", help="Skip the ground-truth evolutions.")
    parser.add_argument("--write-card", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="Tiny samples, a judge of 2 steps and 2 generations: "
                        "checks that the script runs; its figures mean nothing (no card is written).")
    args = parser.parse_args()
    if args.smoke and args.write_card:
        parser.error("--smoke figures mean nothing; they never go into the card: drop --write-card.")
    if args.write_card and args.weights != "pretrained":
        parser.error("--write-card writes the bundled generator's card; it measures only --weights pretrained.")
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: evolutions a class unit; give 1 or more.")
    if args.write_card and args.judge != "corrupted":
        parser.error("--write-card records the ground truth as the corruption-trained judge sees it; drop --judge.")
    if args.grid and (args.quality_only or not Path(args.grid).parent.is_dir()):
        parser.error(f"--grid {args.grid}: the evolved images need the ground truth (drop --quality-only) and an "
                     "existing folder to go in.")
    if args.write_card and args.quality_only:
        parser.error("--write-card records the ground truth too; drop --quality-only.")
    try:  # before the quality figures, not after them
        params = optimizers.parse_params(args.param)
        optimizers.get(args.optimizer).parse_params(params)
    except BadInput as err:
        parser.error(str(err))
    sizes, generations = (SMOKE, 2) if args.smoke else (Sizes(), args.generations)
    started = time.time()
    quality = generator_quality(neurons.create("stimnet:flatten:0"), args.weights, sizes.samples)
    print(json.dumps(quality, indent=2))
    if args.quality_only:
        return
    rows, images, agreement, judged_by = ground_truth(generations, args.weights, args.optimizer, params,
                                                      args.seeds, args.judge, sizes)
    print(f"\n{'class':<13} {'seed':>4} {'stimnet says':<13} {'independent':<13} {'best evolved':>12}"
          f" {'best corpus':>12} {'samples named (stimnet, independent)':>38}")
    for r in rows:
        shares = [r.get(f"samples_named_by_{by}", float("nan")) for by in ("stimnet", "independent")]
        print(f"{r['class']:<13} {r['seed']:>4} {r['stimnet_says']:<13} {r['independent_says']:<13} "
              f"{r['best_response']:>12.3f} {r['best_corpus_response']:>12.3f} {shares[0]:>27.3f} {shares[1]:>10.3f}")
    by_class = tally_by_class(rows)
    summary = {
        **tally(rows), "independent_agrees_with_stimnet_on_random_samples": agreement,
        "independent_classifier": judged_by, "classes": len(FAMILIES), "generations": generations,
        "optimizer": args.optimizer, "params": params, "precision": neurons.create("stimnet:classifier:0").precision,
        "by_class": by_class, **{f"classes_{key}_in_most_evolutions": classes_passing_in_most_evolutions(by_class, key)
                                 for key in ("both_agree", "evolved_beats_best_corpus")},
    }
    print(json.dumps(summary), f"\n{time.time() - started:.0f} s")
    if args.write_card:
        card_path = BUNDLED_WEIGHTS.with_suffix(".json")
        card = json.loads(card_path.read_text())
        card["quality"] = {**quality, "ground_truth": rows, "ground_truth_summary": summary,
                           "measured_by": " ".join(["python", *sys.argv])}
        card_path.write_text(json.dumps(card, indent=2) + "\n")
    if args.grid:
        torchvision.utils.save_image(images, args.grid, nrow=args.seeds, padding=1)


if __name__ == "__main__":
    main()
