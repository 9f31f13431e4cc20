"""A run of GENERATIONS generations whose neuron takes at least SECONDS a generation (the bundled stimnet unit)."""
import sys
import time

import evolver
import neurons

out, generations, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
unit = neurons.create("stimnet:classifier:unit7")


def paced(images):
    time.sleep(seconds)
    return unit.respond(images, [str(i) for i in range(len(images))])


evolver.run(neuron=paced, generations=generations, out=out, progress=False, retest="none")
