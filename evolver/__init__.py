"""evolver: closed-loop evolution of images that drive a neuron.

The loop and its records live here; `neurons` and `generators` hold what it evolves for
and through. Every command of the `evolver` CLI is a thin wrapper over a function here.

    import evolver, neurons
    result = evolver.run(neuron=neurons.from_module(model, "layer4", unit=12), generations=50, out="runs/mine")
    run = evolver.open_run(result.path)   # the run read back: tables, best image, codes
"""
from evolver.experiment import RunConfig, resume, run, start
from evolver.loop import Loop, no_improvement
from evolver.runs import Run, open_run
from evolver.track import GenerationRecord, RunResult

__all__ = ["RunConfig", "RunResult", "GenerationRecord", "Loop", "run", "start", "resume", "no_improvement",
           "open_run", "Run"]
