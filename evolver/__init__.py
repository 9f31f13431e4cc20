"""evolver: closed-loop evolution of images that drive a neuron.

The loop and its records live here; `neurons` and `generators` hold what it evolves for
and through. Every command of the `evolver` CLI is a thin wrapper over a function here.

    import evolver, neurons
    result = evolver.run(neuron=neurons.from_module(model, "layer4", unit=12), generations=50, out="runs/mine")
    run = evolver.open_run(result.path)   # the run read back: tables, best image, codes
"""
import importlib

# Imported when first named (`evolver.run`, `from evolver import open_run`): the command line's --help and
# its argument errors then load no torch.
_LAZY = {"RunConfig": "experiment", "run": "experiment", "start": "experiment", "resume": "experiment",
         "Loop": "loop", "no_improvement": "loop", "Run": "runs", "open_run": "runs", "Session": "runs",
         "open_session": "runs", "Thread": "session",
         "GenerationRecord": "track", "RunResult": "track", "show": "analysis.show", "receptive_field": "analysis.rf",
         "landscape": "analysis.landscape"}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'evolver' has no attribute '{name}'")
    return getattr(importlib.import_module(f"evolver.{_LAZY[name]}"), name)
