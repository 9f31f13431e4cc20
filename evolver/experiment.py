"""The closed loop: ask -> render -> respond -> tell, recorded after every generation."""
from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

import generators
import neurons
from evolver import optimizers
from evolver.records import RunDirectory, npy_bytes, png_bytes, to_uint8
from evolver_common import BadInput

# Independent random streams spawned from the run's seed, by purpose.
OPTIMIZER_STREAM = 0

# The bundled world: stimnet's "star" unit, whose preferred stimulus is known.
DEFAULT_NEURON = "stimnet:classifier:unit7"

VERSIONED_PACKAGES = ("evolver", "torch", "torchvision", "timm", "numpy", "deap", "pandas", "plotly")


@dataclass
class RunConfig:
    """What a user asks for. `params` are the optimizer's (see `evolver.optimizers`); `generator_options`
    go to the generator (e.g. truncation, class_index)."""

    neuron: str = DEFAULT_NEURON
    weights: str = "pretrained"
    generator: str = "dcgan"
    generator_weights: str = "pretrained"
    generator_options: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "ga"
    params: dict[str, Any] = field(default_factory=dict)
    generations: int = 200
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self):
        if self.generations < 1:
            raise BadInput(f"--generations must be at least 1, got {self.generations}.")


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

    def __init__(self, config: RunConfig):
        self.config = config
        self.generator = generators.create(config.generator, weights=config.generator_weights,
                                           device=config.device, precision=config.precision,
                                           **config.generator_options)
        self.neuron = neurons.create(config.neuron, weights=config.weights, device=config.device,
                                     precision=config.precision)
        streams = np.random.SeedSequence(config.seed).spawn(OPTIMIZER_STREAM + 1)
        self.optimizer = optimizers.create(
            config.optimizer, code_dim=self.generator.code_dim, sample=self.generator.sample,
            rng=np.random.default_rng(streams[OPTIMIZER_STREAM]), **config.params,
        )

    def record(self) -> dict[str, Any]:
        """config.json: the request, and everything it resolved to."""
        return {
            "run": dataclasses.asdict(self.config),
            "resolved": {
                "neuron": {"spec": self.neuron.spec, "weights": self.neuron.weights},
                "generator": {"name": self.config.generator, "weights": self.generator.weights,
                              "code_dim": self.generator.code_dim, "image_size": self.generator.image_size},
                "optimizer": self.optimizer.describe(),
                "device": str(self.neuron.device),
                "precision": self.neuron.precision,
            },
            "versions": {"python": platform.python_version(), **_versions()},
            "command": sys.argv,
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


def run(config: RunConfig, out: str | Path | None = None, progress: bool = True) -> RunResult:
    """Evolve codes for `config.neuron` and record the run under `out` (default runs/<time>-<name>)."""
    loop = Loop(config)
    directory = RunDirectory.create(out or default_run_path(config), loop.record())
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
        loop.optimizer.load_state_dict(state["optimizer"])
    return _evolve(loop, directory, state, progress)


def _evolve(loop: Loop, directory: RunDirectory, state: dict[str, Any] | None, progress: bool) -> RunResult:
    from evolver.plots import write_trajectory

    state = state or {"generation": -1, "next_image_id": 0, "told_first_id": 0, "first_best": None, "best": None}
    best, first_best = state["best"], state["first_best"]
    if best is not None:
        _write_best(directory, best)
    bar = tqdm(range(state["generation"] + 1, loop.config.generations), initial=state["generation"] + 1,
               total=loop.config.generations, desc="evolving", unit="gen", disable=not progress)
    for gen in bar:
        started = time.perf_counter()
        codes = loop.optimizer.ask()
        parents = loop.optimizer.parents()
        images = loop.generator.render(codes)
        scores = np.asarray(loop.neuron(images), dtype=np.float64)
        if scores.shape != (len(codes),):
            raise RuntimeError(f"The neuron returned scores of shape {scores.shape} for {len(codes)} images.")
        loop.optimizer.tell(codes, scores)
        seconds = time.perf_counter() - started

        ids = np.arange(state["next_image_id"], state["next_image_id"] + len(codes))
        lineage = [";".join(str(state["told_first_id"] + p) for p in ps) for ps in parents] if parents \
            else [""] * len(codes)
        top = int(np.nanargmax(scores)) if np.isfinite(scores).any() else None
        if top is not None and (best is None or scores[top] > best["score"]):
            best = {"score": float(scores[top]), "generation": gen, "image_id": int(ids[top]),
                    "code": codes[top].copy(), "image": to_uint8(images[top])}
        if first_best is None:
            first_best = float(scores[top]) if top is not None else float("nan")
        directory.write_file(f"codes/gen_{gen:04d}.npy", npy_bytes(codes.astype(np.float32)))
        if top is not None:
            directory.write_file(f"images/gen_{gen:04d}.png", png_bytes(to_uint8(images[top])))
        directory.append_rows("generations.csv", [(
            gen, len(codes), *_summary(scores), best["score"] if best else float("nan"), round(seconds, 4))])
        directory.append_rows("scores.csv", [(gen, int(i), lin, float(s)) for i, lin, s in zip(ids, lineage, scores)])
        state = {"generation": gen, "next_image_id": int(ids[-1]) + 1, "told_first_id": int(ids[0]),
                 "first_best": first_best, "best": best, "optimizer": loop.optimizer.state_dict()}
        directory.commit(state)
        if best is not None and best["generation"] == gen:
            _write_best(directory, best)
        bar.set_postfix(best=f"{np.nanmax(scores):.4g}" if top is not None else "nan",
                        best_so_far=f"{best['score']:.4g}" if best else "nan")
    bar.close()
    write_trajectory([directory.path], directory.path / "trajectory.html")
    return RunResult(directory.path, loop.config.generations, first_best,
                     best["score"] if best else float("nan"), best["generation"] if best else -1, loop.notes())


def _summary(scores: np.ndarray) -> tuple[float, float, float]:
    """Best, mean and standard deviation of the responses that came back."""
    finite = scores[np.isfinite(scores)]
    if not finite.size:
        return (float("nan"),) * 3
    return float(finite.max()), float(finite.mean()), float(finite.std())


def _write_best(directory: RunDirectory, best: dict[str, Any]) -> None:
    directory.write_file("best.png", png_bytes(best["image"]))
    directory.write_file("best_code.npy", npy_bytes(best["code"].astype(np.float32)))
