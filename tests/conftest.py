import os

# Before anything imports huggingface_hub: tests never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import generators
import neurons

# A unit of a randomly initialised resnet18 whose responses vary across DCGAN images.
UNIT = "resnet18:layer2:unit3"


def evolver_cli(*args: str, timeout: float = 600, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """Run the `evolver` command line in a fresh process, as a user would."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **kwargs.pop("env", {})}
    result = subprocess.run([sys.executable, "-m", "evolver", *map(str, args)], capture_output=True, text=True,
                            timeout=timeout, env=env, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"evolver {' '.join(map(str, args))} exited {result.returncode}:\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def dcgan():
    return generators.create("dcgan", weights="random")


@pytest.fixture(scope="session")
def images(dcgan):
    """(12, 3, 64, 64) DCGAN images in [0, 1]."""
    return dcgan.render(dcgan.sample(12, np.random.default_rng(0)))


@pytest.fixture(scope="session")
def unit_neuron():
    return neurons.create(UNIT, weights="random")


@pytest.fixture
def tmp(tmp_path) -> Path:
    return tmp_path
