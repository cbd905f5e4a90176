#!/usr/bin/env bash
# The GPU checks, as run on the lent GPU machine (Python 3.12, torch preinstalled, no network).
# SpeechBrain and friends travel as wheels in .whl/ (see docs/gpu.md); results go to $OUT (default ./gpu_out).
#   bash benchmarks/gpu_checks.sh [decode] [caption] [slu] [paper]
# `paper` needs transformers (in the machine's Python or as a wheel in .whl/); it is not in the default list.
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
      # teacher and student at batch 1, 8 and 64 (the same inference rewrites for both; the student's Seq2Seq decodes
      # through a CUDA graph, the BART teacher dynamically), in bf16 autocast and in fp32
      echo "caption_speed preset: $preset" | tee "$OUT/caption_speed.txt"
      for prec in --bf16 ""; do
        echo "== caption_speed --batch_sizes 1,8,64 ${prec:-fp32}" | tee -a "$OUT/caption_speed.txt"
        timeout 240 python3 benchmarks/caption_speed.py --preset $preset --device cuda --batch_sizes 1,8,64 \
          --n_clips 64 $prec 2>&1 | tee -a "$OUT/caption_speed.txt"
      done ;;
    slu)
      # continual rows on the demo corpus, 3 seeds, through the one sweep command (resumable: calling this again on
      # the same machine continues; `slukd report` lists any run that did not finish apart, never in a mean).
      # Defaults: the main job's rows on SLURP-3. The SLURP-6 table:
      #   SPLITS=slurp6 ROWS=all EPOCHS=25 JOBS=16 SWEEP=results/gpu_slurp6 bash benchmarks/gpu_checks.sh slu
      SEEDS=${SEEDS:-0 1 2}; ROWS=${ROWS:-joint finetune rehearsal_herding seq_kd}; SPLITS=${SPLITS:-slurp3}
      EPOCHS=${EPOCHS:-10}; JOBS=${JOBS:-8}; SWEEP=${SWEEP:-results/gpu_demo}; BUDGET=${BUDGET:-480}
      LATER=${LATER:-5}; DEVICE=${DEVICE:-cuda}
      t0=$(date +%s)
      rowargs=(); [ "$ROWS" != all ] && rowargs=(--rows $ROWS)
      timeout 180 python3 -m slukd.cli synth slu --out data/slu_demo --tier demo --seed 0 --workers 16 2>&1 | tail -2
      snapshot() {  # what a cut call still brings back: reports and run records, no checkpoints
        for s in $SPLITS; do
          j=(); [ -d "$SWEEP/joint" ] && j=("$SWEEP/joint")
          [ -d "$SWEEP/$s" ] && python3 -m slukd.cli report "$SWEEP/$s" "${j[@]}" --paper "$s" \
            > "$OUT/table_$s.txt" 2>&1
        done
        tar czf "$OUT/slu_results.tgz.part" --exclude='save' --exclude='*.ckpt' --exclude='first_task_cache' \
          --exclude='manifests' "$SWEEP" 2>/dev/null && mv "$OUT/slu_results.tgz.part" "$OUT/slu_results.tgz"
      }
      ( while sleep 60; do snapshot; done ) & snap=$!
      left=$(( BUDGET - ($(date +%s) - t0) - 30 ))
      timeout $left python3 -m slukd.cli sweep slu "${rowargs[@]}" --seeds $SEEDS --splits $SPLITS \
        --jobs $JOBS --threads 1 --out "$SWEEP" --set corpus=demo tier=demo data_folder=data/slu_demo \
        number_of_epochs=$EPOCHS later_task_epochs=$LATER first_task_cache="$SWEEP/first_task_cache" device=$DEVICE \
        noprogressbar=true >> "$OUT/slu_sweep.log" 2>&1; echo "sweep exit $? after $(( $(date +%s) - t0 )) s" | tee "$OUT/slu_status.txt"
      pkill -P $snap 2>/dev/null; kill $snap 2>/dev/null; wait $snap 2>/dev/null; snapshot; cat "$OUT"/table_*.txt 2>/dev/null | head -80 ;;
    paper)
      # The papers' configurations at the real size (random wav2vec2-base / HuBERT / WavLM, HTSAT + BART-base
      # weights made here): every task of SLURP-3 and SLURP-6 and the captioning pair with full batches on a slice
      # (one epoch per task, 64 clips per scenario), then each phase timed on a batch of 32 and the projected
      # GPU-hours and memory per paper table (paper_size.md). PAPER_TIME bounds the whole check (seconds).
      PAPER_TIME=${PAPER_TIME:-480}; ENCODERS=${ENCODERS:-wav2vec2}
      python3 -c "import transformers" 2>/dev/null || { echo "paper: transformers missing (add its wheels to .whl/)" \
        | tee "$OUT/paper_size.txt"; continue; }
      timeout "$PAPER_TIME" python3 benchmarks/paper_size.py --out "$OUT/paper_size" --device cuda --full_steps \
        --encoders $ENCODERS --phase_batch 32 --repeats 3 --clip_seconds 2.9 2>&1 | tail -60 | tee "$OUT/paper_size.txt"
      echo "paper_size exit ${PIPESTATUS[0]}" | tee -a "$OUT/paper_size.txt" ;;
  esac
done
