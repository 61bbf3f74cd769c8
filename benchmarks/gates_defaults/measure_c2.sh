#!/bin/bash
# Gates density control without annealing, frozen weights scaled (the candidates after measure_c.sh).
# Same protocol as measure_c.sh: lenet300, full Fashion-MNIST, kaiming-normal, 938 steps at batch 128, 1 thread.
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
R=${RUNS:-.bench/gates_defaults}
run() { # name sparsity method args...
  local name=$1 sp=$2 m=$3; shift 3
  local out=$R/$name-s$sp-seed${SEED:-0}
  .venv/bin/sparsekit prune --model lenet300 --data fashion-mnist --method $m --sparsity $sp \
    --pretrain-epochs 0 --finetune-epochs 0 --search-epochs 2 --weight-init kaiming-normal --seed ${SEED:-0} \
    --no-dense --threads 1 --out $out "$@" --json $out.json > /dev/null 2>>$R.log
  python3 -c "import json;r=json.load(open('$out.json'));i=r['search_info'];print('$name', $sp, 'seed${SEED:-0}', round(100*r['accuracy'],2), 'soft', round(100*i.get('accuracy_soft',0),1), round(r['timings']['search_s'],1), flush=True)"
}
mkdir -p $R
for sp in 0.95 0.9; do
  run gates-project $sp gates --opt objective=project
  run gates-twosided $sp gates --opt two_sided=true
done
SEED=1
for sp in 0.95 0.9; do
  run gates-project $sp gates --opt objective=project
  run gates-default $sp gates
  run gates-twosided $sp gates --opt two_sided=true
done
