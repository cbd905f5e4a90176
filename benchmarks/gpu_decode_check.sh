#!/usr/bin/env bash
# GPU check of the decoding speed (issue 8, GPU half): the shape-static beam search captured in a CUDA graph vs
# SpeechBrain's stock S2STransformerBeamSearcher, plus the decoding tests (their CUDA tests run here).
#
#   bash benchmarks/gpu_decode_check.sh          (from anywhere; PYTHON=... to pick the interpreter)
#
# Every part runs even if an earlier one fails; the exit status is non-zero if any failed. Expected: a few minutes.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
status=0

"$PY" - <<'PYEOF' || status=1
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0))
PYEOF

for size in small large; do
    echo "== benchmarks/decode.py --device cuda --model-size $size"
    timeout 900 "$PY" benchmarks/decode.py --device cuda --model-size "$size" --repeats 3 --warmup 1 || status=1
done
echo "== benchmarks/decode.py --device cuda --model-size large --bf16 (extra: bf16 autocast)"
timeout 900 "$PY" benchmarks/decode.py --device cuda --model-size large --bf16 --repeats 3 --warmup 1 || status=1

echo "== pytest tests/test_decoding.py tests/test_decoding_static.py"
timeout 900 "$PY" -m pytest -q -rs tests/test_decoding.py tests/test_decoding_static.py || status=1
echo "== exit status $status"
exit $status
