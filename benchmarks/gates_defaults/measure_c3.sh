#!/bin/bash
# Seed 1 of the density-control comparison (project vs one-sided GradBalance), frozen weights scaled
# (weight_scale=density). Same protocol as measure_c.sh.
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
while kill -0 26229 2>/dev/null; do sleep 5; done
R=${RUNS:-.bench/gates_defaults}
python3 -c "import json;r=json.load(open('$R/gates-twosided-s0.9-seed0.json'));i=r['search_info'];print('gates-twosided', 0.9, 'seed0', round(100*r['accuracy'],2), 'soft', round(100*i.get('accuracy_soft',0),1), round(r['timings']['search_s'],1), flush=True)"
run() { # name sparsity method args...
  local name=$1 sp=$2 m=$3; shift 3
  local out=$R/$name-s$sp-seed${SEED:-0}
  .venv/bin/sparsekit prune --model lenet300 --data fashion-mnist --method $m --sparsity $sp \
    --pretrain-epochs 0 --finetune-epochs 0 --search-epochs 2 --weight-init kaiming-normal --seed ${SEED:-0} \
    --no-dense --threads 1 --out $out "$@" --json $out.json > /dev/null 2>>$R.log
  python3 -c "import json;r=json.load(open('$out.json'));i=r['search_info'];print('$name', $sp, 'seed${SEED:-0}', round(100*r['accuracy'],2), 'soft', round(100*i.get('accuracy_soft',0),1), round(r['timings']['search_s'],1), flush=True)"
}
SEED=1
for sp in 0.95 0.9; do
  run gates-project $sp gates --opt objective=project --weight-scale density
  run gates-onesided $sp gates --opt objective=gradbalance --weight-scale density
done
