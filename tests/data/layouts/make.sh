#!/usr/bin/env bash
# Remakes the kept run folders of every state layout evolver has written (tests/test_layouts.py): each is
# a run stopped after 2 generations by the evolver of a past commit, fp32 on the CPU so that it resumes on
# any CPU. Usage: bash tests/data/layouts/make.sh (from the repository root; needs git history).
set -euo pipefail
root=$(pwd); here=tests/data/layouts
make() {  # NAME COMMIT ARGS...: a run of that commit's evolver
  local name=$1 commit=$2; shift 2
  local tree; tree=$(mktemp -d)
  git archive "$commit" | tar -x -C "$tree"
  rm -rf "$root/$here/$name"
  (cd "$tree" && HF_HUB_OFFLINE=1 PYTHONPATH="$tree" python -m evolver run --quiet --precision fp32 --device cpu \
     --neuron stimnet:relu4:unit1 --population 6 --seed 1 --out "$root/$here/$name" "$@")
  rm -rf "$tree" "$root/$here/$name/trajectory.html" "$root/$here/$name/.lock" "$root/$here"/plotly-*.min.js
}
# version 1 before start=prior: CMA-ES without awaiting_prior
make v1-before-prior-cmaes 3dbd770 --optimizer cmaes --generations 2
# version 1 before the re-test: no best_told, shortlist or retested; sep-CMA-ES's search under "state"
EVOLVER_MAX_GENERATIONS=2 make v1-before-retest-cmaes efe021e --optimizer cmaes --generations 4
EVOLVER_MAX_GENERATIONS=2 make v1-before-retest-sep-cmaes-noise efe021e --optimizer sep-cmaes --generations 4 \
  --noise multiplicative:0.5 --reference procedural:4 --interleave 2
EVOLVER_MAX_GENERATIONS=2 make v1-before-retest-racing-stimuli efe021e --optimizer racing-cmaes --generator stimuli \
  --generations 4
# version 1 with the re-test (the last untyped layout): a noisy uh-cmaes run with its shortlist
EVOLVER_MAX_GENERATIONS=2 make v1-retest-uh-cmaes-noise 786f10d --optimizer uh-cmaes --generations 4 \
  --noise poisson:count=5
EVOLVER_MAX_GENERATIONS=2 make v1-retest-ga 786f10d --optimizer ga --generations 4
# version 2, the typed state: tables checked by length only (no rows or digests recorded)
EVOLVER_MAX_GENERATIONS=2 make v2-cmaes-noise 38edf16 --optimizer cmaes --generations 4 --noise poisson:count=5
# version 3: tables checked by rows and digest; the images shown again for a missing response not counted
EVOLVER_MAX_GENERATIONS=2 make v3-uh-cmaes-noise 1e8be74 --optimizer uh-cmaes --generations 4 --noise poisson:count=5
