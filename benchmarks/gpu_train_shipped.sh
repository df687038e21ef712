#!/usr/bin/env bash
# Meta-train both shipped GHNs side by side on one GPU, each sized to a time budget.
# This is the command behind the GPU-trained checkpoints in ghnas/assets:
#
#   bash benchmarks/gpu_train_shipped.sh CIFAR10_TRAIN.tgz OUT_DIR BUDGET_SECONDS
#
# CIFAR10_TRAIN.tgz holds the ImageFolder tree train/<class>/*.jpg (made with
# `tar czf c10train.tgz -C ../shared/data/cifar10 train`: 16 MB). OUT_DIR receives per
# space the run log, the best checkpoint, its config and its history. Install them
# afterwards with `python benchmarks/train_shipped_ghns.py --space S --out OUT_DIR/S --install`.
set -u
tgz=$1; out=$2; budget=$3
data=/tmp/ghnas_c10
mkdir -p "$data/test" "$out"   # the train split is all that meta-training reads
tar xzf "$tgz" -C "$data"
export GHNAS_CACHE=/tmp/ghnas_cache PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; nproc
  python3 -c "import sys, torch; print(sys.version.split()[0], torch.__version__)"; } 2>&1 | tee "$out/env.txt"
# decode the JPEGs once, into the cache both runs read
python3 -c "import ghnas.data as d; print(d.load('cifar10', root='$data', split='train'))"
run() {  # space, extra args; retried in float32 if the mixed-precision run fails before its first checkpoint
  local space=$1; shift
  timeout $((budget + 70)) python3 benchmarks/train_shipped_ghns.py --space "$space" --gpu --device "${DEVICE:-cuda}" \
      --budget-s "$budget" --data-root "$data" --out "/tmp/runs/$space" "$@"
}
for space in nb201 darts; do
  ( run $space || [ -e "/tmp/runs/$space/state.pt" ] || { echo "== retry in float32"; run $space --no-amp; } ) \
      > "$out/$space.log" 2>&1 &
done
wait
for space in nb201 darts; do
  mkdir -p "$out/$space"
  cp /tmp/runs/$space/{ghn_best.pt,config.json,history.json} "$out/$space/" 2>/dev/null
  cat "$out/env.txt" >> "$out/$space.log"
done
rm -f "$out/env.txt"
ls -la "$out" "$out"/*
