"""evolver: closed-loop evolution of images that drive a neuron.

The loop and its records live here; `neurons` and `generators` hold what it evolves for
and through. Every command of the `evolver` CLI is a thin wrapper over a function here.
"""
from evolver.experiment import RunConfig, RunResult, resume, run, run_units

__all__ = ["RunConfig", "RunResult", "run", "run_units", "resume"]
