#!/usr/bin/env bash
# The GPU checks, as run on the lent GPU machine (Python 3.12, torch preinstalled, no network).
# SpeechBrain and friends travel as wheels in .whl/ (see docs/gpu.md); results go to $OUT (default ./gpu_out).
#   bash benchmarks/gpu_checks.sh [decode] [caption] [slu]
set -u
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >"$OUT/pip.log" 2>&1 || { echo "wheel install failed"; tail "$OUT/pip.log"; }
fi
what=${*:-decode caption slu}
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
for w in $what; do
  case $w in
    decode)
      for size in small large; do
        timeout 150 python3 benchmarks/decode.py --device cuda --model-size "$size" --repeats 3 --warmup 1 \
          2>&1 | tee "$OUT/decode_$size.txt"
      done ;;
    caption)
      # the papers' real architectures (HTSAT + BART vs EfficientNet-B2) when transformers is there, else the stand-in
      preset=paper; python3 -c "import transformers" 2>/dev/null && preset=paper_real
      echo "caption_speed preset: $preset" | tee "$OUT/caption_speed.txt"
      timeout 300 python3 benchmarks/caption_speed.py --preset $preset --device cuda --bf16 2>&1 | tee -a "$OUT/caption_speed.txt" ;;
    slu)
      # the main job's rows (and joint) on SLURP-3 for 3 seeds on the demo corpus, through the one sweep command
      # (8 runs at a time; resumable; `slukd report` lists any run that did not finish apart, never in a mean)
      SEEDS=${SEEDS:-0 1 2}; ROWS=${ROWS:-joint finetune rehearsal_herding seq_kd}
      timeout 180 python3 -m slukd.cli synth slu --out data/slu_demo --tier demo --seed 0 --workers 16 2>&1 | tail -2
      timeout ${SLU_TIMEOUT:-480} python3 -m slukd.cli sweep slu --rows $ROWS --seeds $SEEDS --splits slurp3 \
        --jobs 8 --threads 1 --out results/gpu_demo --set corpus=demo demo_tier=demo data_folder=data/slu_demo number_of_epochs=10 later_task_epochs=5 \
        device=cuda noprogressbar=true > "$OUT/slu_sweep.log" 2>&1; echo "sweep exit $?" | tee "$OUT/slu_status.txt"
      python3 -m slukd.cli report results/gpu_demo --out "$OUT/slu_table" 2>&1 | tee "$OUT/slu_table.txt"
      tar czf "$OUT/slu_results.tgz" --exclude='save' --exclude='*.ckpt' results/gpu_demo 2>/dev/null ;;
  esac
done
