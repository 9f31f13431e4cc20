"""evolver: closed-loop evolution of images that drive a neuron.

The loop and its records live here; `neurons` and `generators` hold what it evolves for
and through. Every command of the `evolver` CLI is a thin wrapper over a function here.

    import evolver, neurons
    result = evolver.run(neuron=neurons.from_module(model, "layer4", unit=12), generations=50, out="runs/mine")
"""
from evolver.experiment import RunConfig, resume, run, run_units, start
from evolver.loop import GenerationRecord, Loop, RunResult, no_improvement

__all__ = ["RunConfig", "RunResult", "GenerationRecord", "Loop", "run", "start", "run_units", "resume", "no_improvement"]
