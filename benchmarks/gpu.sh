#!/usr/bin/env bash
# On a machine with an NVIDIA GPU (after `pip install -e ".[cuda12]"`): the tracking-overhead
# benchmark, then `eoslab train` in Cohen et al.'s setting (fc-tanh, two hidden layers of 200, on
# 5,000 CIFAR-10-shaped examples: the real files with --data-dir, else synthetic ones of the same
# shape; 2,000 steps, top-2 Hessian and NTK eigenvalues at every step) with and without tracking.
# Prints steps/s and the overhead ratio. Meant to finish in under 8 minutes.
# Usage: bash benchmarks/gpu.sh [CIFAR_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
$PY -c "import jax; d = jax.devices()[0]; print('device:', d.platform, d.device_kind); assert d.platform == 'gpu', 'no GPU visible to JAX'"
$PY benchmarks/tracking_overhead.py --steps 100 --repeats 3
OUT=$(mktemp -d)
if [ $# -ge 1 ]; then DIR=$1; else
  DIR=$OUT/cifar-10-batches-py   # CIFAR-10-shaped random images in the dataset's own pickle format
  $PY - "$DIR" <<'PY'
import os, pickle, sys
import numpy as np
root = sys.argv[1]
os.makedirs(root)
rng = np.random.default_rng(0)
for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    n = 5000 if name == "data_batch_1" else 10
    batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"labels": [int(v) for v in rng.integers(0, 10, n)]}
    with open(os.path.join(root, name), "wb") as fh:
        pickle.dump(batch, fh, protocol=2)
with open(os.path.join(root, "batches.meta"), "wb") as fh:
    pickle.dump({b"label_names": [b"c%d" % i for i in range(10)]}, fh, protocol=2)
PY
fi
COMMON=(--model mlp --depth 2 --width 200 --activation tanh --data cifar10 --data-dir "$DIR" --n 5000
        --lr 0.02 --steps 2000 --no-progress)
eoslab train "${COMMON[@]}" --track none --json-out "$OUT/plain.json"
eoslab train "${COMMON[@]}" --track hessian,ntk --k 2 --track-every 1 --json-out "$OUT/tracked.json"
$PY - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
plain, tracked = (json.load(open(f"{out}/{n}.json")) for n in ("plain", "tracked"))
sp, st = plain["summary"]["seconds"], tracked["summary"]["seconds"]
steps = tracked["summary"]["steps"]
print(f"eoslab train, fc-tanh 200x200, 5,000 examples, {steps} steps (compilation included):")
print(f"  untracked {steps / sp:.1f} steps/s, tracked (Hessian + NTK top-2 every step) {steps / st:.1f} steps/s,"
      f" overhead ratio {st / sp:.2f}")
PY
