"""The closed loop: ask -> render -> respond -> tell, recorded after every generation."""
from __future__ import annotations

import copy
import dataclasses
import datetime
import importlib.metadata
import platform
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

import generators
import neurons
from evolver import optimizers
from evolver.records import GENERATION_COLUMNS, SCORE_COLUMNS, RunDirectory, npy_bytes, png_bytes, to_uint8
from evolver.reference import load_reference
from neurons.noise import Noise
from evolver_common import BadInput
from evolver_common.compute import small_linear_algebra
from evolver_common.memory import release_freed_memory

# Independent random streams spawned from the run's seed, by purpose.
OPTIMIZER_STREAM, NOISE_STREAM = 0, 1

# The bundled world: stimnet's "star" unit, whose preferred stimulus is known; its evolved images
# drive it 3-4x above the best of 10,000 corpus images (CMA-ES, 100 generations); stimnet calls all of
# them stars, an independent classifier most (README, "The bundled world": the cmaes row of the ground-truth
# table; the card's "ground_truth" now holds the GA's evolutions).
DEFAULT_NEURON = "stimnet:classifier:unit7"

# Chosen by `evolver bench` (README, "Choosing the default optimizer"): best mean normalised score on
# the bundled DCGAN (the unconditional one of the time) both noise-free and under multiplicative noise;
# on the H200 conditional one, still first noise-free and tied with the GA under noise; on the 2-core
# conditional one bundled now, first in both again, from the zero code (its default start).
DEFAULT_OPTIMIZER = "cmaes"

# Images whose responses did not come back are shown again (up to REPRESENTATIONS more blocks),
# or told to the optimizer as missing (NaN): it then learns from the others.
MISSING = ("represent", "skip")
REPRESENTATIONS = 2

VERSIONED_PACKAGES = ("evolver", "torch", "torchvision", "timm", "numpy", "deap", "pandas", "plotly")


@dataclass
class RunConfig:
    """What a user asks for. `params` are the optimizer's (see `evolver.optimizers`); `generator_options`
    go to the generator (e.g. truncation, class_index)."""

    neuron: str = DEFAULT_NEURON
    minimize: bool = False  # evolve for the lowest response: the objective is -(neuron)
    weights: str = "pretrained"
    generator: str = "dcgan"
    generator_weights: str = "pretrained"
    generator_options: dict[str, Any] = field(default_factory=dict)
    optimizer: str = DEFAULT_OPTIMIZER
    params: dict[str, Any] = field(default_factory=dict)
    generations: int = 200
    seed: int = 0
    noise: str | None = None
    reference: str | None = None
    images: int | None = None  # stop once this many images were shown, within `generations`
    missing: str = "represent"  # responses that did not come back: 'represent' the images, or 'skip' them
    interleave: int = 0  # reference images shown in every generation's block (XDream), needs `reference`
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False  # torch.compile the neuron's networks: faster after a compile at the start

    def __post_init__(self):
        if self.generations < 1:
            raise BadInput(f"--generations must be at least 1, got {self.generations}.")
        if self.images is not None and self.images < 1:
            raise BadInput(f"--images must be at least 1, got {self.images}.")
        if self.missing not in MISSING:
            raise BadInput(f"--missing {self.missing}: valid choices are {', '.join(MISSING)}.")
        if self.interleave and not self.reference:
            raise BadInput("--interleave shows reference images in every block; give them with --reference.")
        if self.interleave < 0:
            raise BadInput(f"--interleave must not be negative, got {self.interleave}.")


@dataclass
class RunResult:
    """What a finished (or resumed) run reached, and where its files are."""

    path: Path
    generations: int
    first_best: float
    best: float
    best_generation: int
    notes: list[str]


class Loop:
    """A neuron, a generator and an optimizer wired together for one run."""

    def __init__(self, config: RunConfig, generator: generators.Generator | None = None,
                 neuron: neurons.Neuron | None = None):
        """`generator` and `neuron`, when given, are shared with other loops (`run_units`)."""
        self.config = config
        self.generator = generator or generators.create(config.generator, weights=config.generator_weights,
                                                        device=config.device, precision=config.precision,
                                                        **config.generator_options)
        objective = f"-({config.neuron})" if config.minimize else config.neuron
        self.neuron = neuron or neurons.create(objective, weights=config.weights, device=config.device,
                                               precision=config.precision)
        if config.compile and neuron is None:
            self.neuron.compile()
        if self.neuron.outputs != 1:
            raise BadInput(f"The neuron '{config.neuron}' gives {self.neuron.outputs} responses per image (a set of "
                           "units) and an evolution needs one: wrap it in mean(...), max(...), min(...) or "
                           "onehot(SET, UNIT), e.g. 'mean(resnet50:layer4:unit0-63)'; a plain unit set given to "
                           "`evolver run` evolves each unit on its own, all in one batch.")
        streams = np.random.SeedSequence(config.seed).spawn(NOISE_STREAM + 1)
        self.noise = Noise.parse(config.noise) if config.noise else None
        self.noise_rng = np.random.default_rng(streams[NOISE_STREAM])
        gradient = {"objective": self.differentiable_objective} if optimizers.get(config.optimizer).needs_gradient else {}
        self.optimizer = optimizers.create(
            config.optimizer, code_dim=self.generator.code_dim, sample=self.generator.sample,
            rng=np.random.default_rng(streams[OPTIMIZER_STREAM]), **gradient, **config.params,
        )
        self.reference = None
        if config.reference:
            self.reference_images, self.reference_names = load_reference(config.reference, self.generator.image_size)
            n = len(self.reference_images)
            self.reference = np.concatenate([
                self.neuron.respond(self.reference_images[i:i + 100], [f"ref{k}" for k in range(i, min(i + 100, n))])
                for i in range(0, n, 100)])

    def differentiable_objective(self, codes):
        """Responses (n,) to the images of `codes` (n, code_dim), differentiable in the codes."""
        return self.neuron.differentiable(self.generator.differentiable(codes))

    def respond(self, images, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(responses the optimizer sees, noise-free responses) to `images` with the run's `ids`;
        missing responses are NaN, after the images were shown again if `missing` says so."""
        clean = self._present(images, ids)
        for _ in range(REPRESENTATIONS if self.config.missing == "represent" else 0):
            again = np.flatnonzero(np.isnan(clean))
            if not again.size:
                break
            clean[again] = self._present(images[again], [ids[i] for i in again])
        return (self.noise(clean, self.noise_rng) if self.noise else clean), clean

    def _present(self, images, ids: list[str]) -> np.ndarray:
        clean = np.asarray(self.neuron.respond(images, ids), dtype=np.float64)
        if clean.shape != (len(images),):
            raise RuntimeError(f"The neuron returned responses of shape {clean.shape} for {len(images)} images.")
        return clean

    def interleaved(self, gen: int) -> tuple[list[int], list[str]]:
        """The reference images shown in generation `gen`'s block: indices into the set, and their ids."""
        n = len(self.reference_images)
        picked = [(gen * self.config.interleave + k) % n for k in range(min(self.config.interleave, n))]
        return picked, [f"ref{i}" for i in picked]

    def columns(self) -> dict[str, tuple[str, ...]]:
        """The tables' columns: DESIGN.md's, plus noise-free and relative figures when they exist."""
        generation, score = list(GENERATION_COLUMNS), list(SCORE_COLUMNS)
        if self.noise:
            generation += ["best_clean", "best_clean_so_far"]
            score += ["score_clean"]
        if self.reference is not None:
            generation += ["relative_activation"]
        tables = {"generations.csv": tuple(generation), "scores.csv": tuple(score)}
        if self.config.interleave:
            tables["references.csv"] = ("gen", "image", "score")
        return tables

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "noise_rng": self.noise_rng.bit_generator.state,
                "noise": dict(self.noise.state) if self.noise else {},
                "neuron": self.neuron.state_dict() if hasattr(self.neuron, "state_dict") else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.noise_rng.bit_generator.state = state["noise_rng"]
        if self.noise:
            self.noise.state = dict(state["noise"])
        if state.get("neuron"):
            self.neuron.load_state_dict(state["neuron"])

    def record(self, command: list[str] | None = None) -> dict[str, Any]:
        """config.json: the request, and everything it resolved to; `command` is the command line that
        asked for it (default: this process's)."""
        return {
            "run": dataclasses.asdict(self.config),
            "resolved": {
                "neuron": {"spec": self.neuron.spec, "weights": self.neuron.weights},
                "generator": {"name": self.config.generator, "weights": self.generator.weights,
                              "code_dim": self.generator.code_dim, "image_size": self.generator.image_size},
                "optimizer": self.optimizer.describe(),
                "noise": str(self.noise) if self.noise else None,
                "reference": {"images": len(self.reference), "best": float(np.nanmax(self.reference))}
                if self.reference is not None else None,
                "device": str(self.neuron.device),
                "precision": self.neuron.precision,
                "precision_check": getattr(getattr(self.neuron, "reader", None), "precision_check", None),
            },
            "versions": {"python": platform.python_version(), **_versions()},
            "command": command or sys.argv,
            "created": datetime.datetime.now().isoformat(timespec="seconds"),
        }

    def notes(self) -> list[str]:
        """Warnings a reader of the results must see."""
        warnings = {
            "neuron": "the neuron's network has untrained random weights: its preferences are not a trained network's",
            "generator": "the generator has untrained random weights: its images are textures, not natural-like images",
        }
        parts = {"neuron": self.neuron, "generator": self.generator}
        return [warnings[k] for k, part in parts.items() if part.weights.startswith("random")]


def _versions() -> dict[str, str]:
    found = {}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def default_run_path(config: RunConfig, root: Path = Path("runs")) -> Path:
    """runs/<YYYYmmdd-HHMMSS>-<neuron and optimizer>, unique."""
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{config.neuron}-{config.optimizer}").strip("-")[:80]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = root / f"{stamp}-{slug}", 1
    while path.exists():
        n += 1
        path = root / f"{stamp}-{slug}-{n}"
    return path


def run(config: RunConfig, out: str | Path | None = None, progress: bool = True,
        command: list[str] | None = None) -> RunResult:
    """Evolve codes for `config.neuron` and record the run under `out` (default runs/<time>-<name>);
    `command`, the command line that asked for it, goes to config.json (default: this process's)."""
    loop = Loop(config)
    directory = RunDirectory.create(out or default_run_path(config), loop.record(command), loop.columns())
    if loop.reference is not None:
        table = pd.DataFrame({"image": loop.reference_names, "score": loop.reference})
        directory.write_file("reference.csv", table.to_csv(index=False).encode())
    return _evolve(loop, directory, None, progress)


def resume(path: str | Path, progress: bool = True, **requested: Any) -> RunResult:
    """Continue the run in `path` from its last finished generation.

    `requested` holds options given again (RunConfig fields); they must match the run's
    configuration, except `generations`, which may extend the run.
    """
    directory = RunDirectory.open(path)
    recorded = directory.config()
    config = RunConfig(**recorded["run"])
    conflicts = [
        f"{name}={value!r} (the run has {getattr(config, name)!r})"
        for name, value in requested.items()
        if value is not None and name != "generations" and value != getattr(config, name)
    ]
    if conflicts:
        raise BadInput(
            f"--resume {path}: these options conflict with the run's config.json: {'; '.join(conflicts)}. "
            "Leave them out to continue the run as it was (only --generations may change), or start a new run."
        )
    if requested.get("generations"):
        config.generations = requested["generations"]
        recorded["run"]["generations"] = config.generations
        directory.write_config(recorded)
    loop = Loop(config)
    state = directory.roll_back()
    if state is not None:
        loop.load_state_dict(state["loop"])
    return _evolve(loop, directory, state, progress)


class _Evolution:
    """One run in progress: its loop, its folder, and what is carried from generation to generation."""

    def __init__(self, loop: Loop, directory: RunDirectory, state: dict[str, Any] | None):
        self.loop, self.directory = loop, directory
        self.state = state or {"generation": -1, "next_image_id": 0, "told_first_id": 0, "first_best": None,
                               "best": None, "best_clean_so_far": float("-inf")}
        self.best, self.first_best = self.state["best"], self.state["first_best"]
        self.best_clean = self.state["best_clean_so_far"]
        self.writing = None
        if self.best is not None:
            _write_best(directory, self.best)

    def done(self) -> bool:
        images = self.loop.config.images
        return images is not None and self.state["next_image_id"] >= images

    def ids(self, n: int) -> np.ndarray:
        return np.arange(self.state["next_image_id"], self.state["next_image_id"] + n)

    def conclude(self, gen: int, codes: np.ndarray, parents, images, scores: np.ndarray, clean: np.ndarray,
                 references: list[tuple], seconds: float, writer: ThreadPoolExecutor) -> None:
        """Tell the optimizer, update the figures and hand the generation's records to `writer`."""
        loop, state = self.loop, self.state
        loop.optimizer.tell(codes, scores)
        ids = self.ids(len(codes))
        top = int(np.nanargmax(scores)) if np.isfinite(scores).any() else None
        top_image = to_uint8(images[top]) if top is not None else None
        if top is not None and (self.best is None or scores[top] > self.best["score"]):
            self.best = {"score": float(scores[top]), "generation": gen, "image_id": int(ids[top]),
                         "code": codes[top].copy(), "image": top_image}
        if self.first_best is None:
            self.first_best = float(scores[top]) if top is not None else float("nan")
        if np.isfinite(clean).any():
            self.best_clean = max(self.best_clean, float(np.nanmax(clean)))
        best = self.best
        row = [gen, len(codes), *_summary(scores), best["score"] if best else float("nan"), round(seconds, 4)]
        if loop.noise:
            row += [_summary(clean)[0], self.best_clean]
        if loop.reference is not None:
            row += [self.best_clean / float(np.nanmax(loop.reference))]
        lineage = [";".join(str(state["told_first_id"] + p) for p in ps) for ps in parents] if parents \
            else [""] * len(codes)
        records = Records(
            gen=gen, codes=codes.astype(np.float32), top_image=top_image,
            generation_row=tuple(row), references=references, best=best,
            score_rows=[(gen, int(i), lin, float(s), *([float(c)] if loop.noise else []))
                        for i, lin, s, c in zip(ids, lineage, scores, clean)])
        self.state = {"generation": gen, "next_image_id": int(ids[-1]) + 1, "told_first_id": int(ids[0]),
                      "first_best": self.first_best, "best": best, "best_clean_so_far": self.best_clean,
                      "loop": copy.deepcopy(loop.state_dict())}  # a snapshot: the optimizer moves on meanwhile
        self.wait()  # in order, and a failed write stops the run here
        self.writing = writer.submit(_record, self.directory, records, self.state)

    def wait(self) -> None:
        if self.writing is not None:
            self.writing.result()

    def result(self) -> RunResult:
        from evolver.plots import write_trajectory  # plotly only once the run is over

        write_trajectory([self.directory.path], self.directory.path / "trajectory.html")
        best = self.best
        return RunResult(self.directory.path, self.state["generation"] + 1, self.first_best,
                         best["score"] if best else float("nan"), best["generation"] if best else -1, self.loop.notes())


def _evolve(loop: Loop, directory: RunDirectory, state: dict[str, Any] | None, progress: bool) -> RunResult:
    evolution = _Evolution(loop, directory, state)
    first = evolution.state["generation"] + 1
    bar = tqdm(range(first, loop.config.generations), initial=first, total=loop.config.generations,
               desc="evolving", unit="gen", disable=not progress)
    # Generation g's records are written while generation g + 1 computes (the forward passes release
    # the GIL); one generation at most is in flight, so a killed run loses no more than before.
    with ThreadPoolExecutor(max_workers=1) as writer, small_linear_algebra():
        for gen in bar:
            if evolution.done():
                break
            started = time.perf_counter()
            codes = loop.optimizer.ask()
            parents = loop.optimizer.parents()
            images = loop.generator.render(codes)
            shown, shown_ids, references = images, [str(i) for i in evolution.ids(len(codes))], []
            if loop.config.interleave:
                picked, reference_ids = loop.interleaved(gen)
                shown = torch.cat([images, loop.reference_images[picked].to(images.device, images.dtype)])
                shown_ids += reference_ids
            scores, clean = loop.respond(shown, shown_ids)
            if loop.config.interleave:
                references = [(gen, loop.reference_names[i], float(s)) for i, s in zip(picked, scores[len(codes):])]
                scores, clean = scores[:len(codes)], clean[:len(codes)]
            evolution.conclude(gen, codes, parents, images, scores, clean, references,
                               time.perf_counter() - started, writer)
            bar.set_postfix(best=f"{np.nanmax(scores):.4g}" if np.isfinite(scores).any() else "nan",
                            best_so_far=f"{evolution.best['score']:.4g}" if evolution.best else "nan")
        evolution.wait()
    bar.close()
    return evolution.result()


def run_units(config: RunConfig, out: str | Path | None = None, progress: bool = True,
              batch: int | None = None, command: list[str] | None = None) -> list[RunResult]:
    """One independent evolution per unit of a unit set (`resnet50:layer4:unit0-63`), all in one batch.

    Every generation, each unit's optimizer proposes its population; the populations are rendered
    and shown together (`batch` images at a time: 128 on a CPU, 512 on a GPU) and each unit's run
    is told its own unit's responses to its own images. Each unit gets an ordinary run folder,
    `out/unitN`, with its own config (the single unit's spec), resumable on its own as a single-unit run.
    """
    from neurons.cnn import CNNUnit
    from neurons.spec import UnitSpec

    unit_set = UnitSpec.parse(config.neuron)
    if config.minimize or config.reference or config.interleave:
        raise BadInput("A unit set runs one evolution per unit; --minimize, --reference and --interleave work with "
                       "single units (or wrap the set: mean(...), onehot(...)).")
    shared = neurons.create(str(unit_set), weights=config.weights, device=config.device, precision=config.precision)
    if config.compile:
        shared.compile()
    generator = generators.create(config.generator, weights=config.generator_weights, device=config.device,
                                  precision=config.precision, **config.generator_options)
    # 64 stimnet units × 40 codes on 2 CPU cores: 1,010 images/s in chunks of 128, 700 in chunks of 512
    # (a chunk's activations stay in cache); a GPU wants the larger batches
    batch = batch or (512 if shared.device.type == "cuda" else 128)
    out = Path(out or default_run_path(config))
    evolutions = []
    for unit in unit_set.units:
        single = UnitSpec(unit_set.model, unit_set.layer, unit, unit_set.position)
        loop = Loop(dataclasses.replace(config, neuron=str(single)), generator,
                    CNNUnit(single, reader=shared.reader))
        evolutions.append(_Evolution(loop, RunDirectory.create(out / f"unit{unit}", loop.record(command), loop.columns()),
                                     None))
    bar = tqdm(range(config.generations), desc=f"evolving {len(evolutions)} units", unit="gen", disable=not progress)
    with ThreadPoolExecutor(max_workers=1) as writer, small_linear_algebra():
        for gen in bar:
            if all(e.done() for e in evolutions):
                break
            started = time.perf_counter()
            proposals = [(e.loop.optimizer.ask(), e.loop.optimizer.parents()) for e in evolutions]
            codes = np.concatenate([c for c, _ in proposals])
            rendered, answered = [], []
            for i in range(0, len(codes), batch):
                rendered.append(generator.render(codes[i:i + batch]))
                answered.append(shared.respond(rendered[-1]))
            images, responses = torch.cat(rendered), np.concatenate(answered)
            seconds = (time.perf_counter() - started) / len(evolutions)
            start = 0
            for column, (evolution, (unit_codes, parents)) in enumerate(zip(evolutions, proposals)):
                rows = slice(start, start + len(unit_codes))
                start += len(unit_codes)
                clean = responses[rows, column].astype(np.float64)
                noise = evolution.loop.noise
                scores = noise(clean, evolution.loop.noise_rng) if noise else clean
                evolution.conclude(gen, unit_codes, parents, images[rows], scores, clean, [], seconds, writer)
        for evolution in evolutions:
            evolution.wait()
    bar.close()
    return [evolution.result() for evolution in evolutions]


@dataclass
class Records:
    """What one generation leaves on disk (DESIGN.md's run folder)."""

    gen: int
    codes: np.ndarray
    top_image: np.ndarray | None  # (H, W, 3) uint8
    generation_row: tuple
    score_rows: list[tuple]
    references: list[tuple]
    best: dict[str, Any] | None


def _record(directory: RunDirectory, records: Records, state: dict[str, Any]) -> None:
    """Write a generation's files and rows, then commit it: only then does it count as finished."""
    directory.write_file(f"codes/gen_{records.gen:04d}.npy", npy_bytes(records.codes))
    if records.top_image is not None:
        directory.write_file(f"images/gen_{records.gen:04d}.png", png_bytes(records.top_image))
    if records.references:
        directory.append_rows("references.csv", records.references)
    directory.append_rows("generations.csv", [records.generation_row])
    directory.append_rows("scores.csv", records.score_rows)
    directory.commit(state)
    if records.best is not None and records.best["generation"] == records.gen:
        _write_best(directory, records.best)
    release_freed_memory()


def _summary(scores: np.ndarray) -> tuple[float, float, float]:
    """Best, mean and standard deviation of the responses that came back."""
    finite = scores[np.isfinite(scores)]
    if not finite.size:
        return (float("nan"),) * 3
    return float(finite.max()), float(finite.mean()), float(finite.std())


def _write_best(directory: RunDirectory, best: dict[str, Any]) -> None:
    directory.write_file("best.png", png_bytes(best["image"]))
    directory.write_file("best_code.npy", npy_bytes(best["code"].astype(np.float32)))
