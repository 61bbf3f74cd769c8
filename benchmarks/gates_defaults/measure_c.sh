#!/bin/bash
# Measurements for the gates / edge-popup defaults (item C). lenet300, full Fashion-MNIST, frozen
# kaiming-normal weights (pretrain 0, fine-tune 0), 2 search epochs at batch 128 = 938 steps, seed 0, 1 thread.
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
R=${RUNS:-.bench/gates_defaults}
run() { # name sparsity method args...
  local name=$1 sp=$2 m=$3; shift 3
  local out=$R/$name-s$sp
  .venv/bin/sparsekit prune --model lenet300 --data fashion-mnist --method $m --sparsity $sp \
    --pretrain-epochs 0 --finetune-epochs 0 --search-epochs 2 --weight-init kaiming-normal --seed ${SEED:-0} \
    --no-dense --threads 1 --out $out "$@" --json $out.json > /dev/null 2>>$R.log
  python3 -c "import json;r=json.load(open('$out.json'));print('$name', $sp, round(100*r['accuracy'],2), round(r['timings']['search_s'],1), flush=True)"
}
mkdir -p $R
for sp in 0.95 0.9; do
  run gates-default $sp gates
  run ep-none $sp edge-popup
  run gates-noscale $sp gates --weight-scale none
  run ep-density $sp edge-popup --weight-scale density
  run gates-old $sp gates --weight-scale none --opt objective=project --opt two_sided=true --opt anneal=true --opt headroom=1.0
  run gates-twosided $sp gates --opt two_sided=true
done
