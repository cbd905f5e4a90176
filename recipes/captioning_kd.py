#!/usr/bin/env python
"""Efficient audio captioning with encoder-level KD: one row of the results table per YAML.

    python recipes/captioning_kd.py hparams/captioning_kd/teacher.yaml [--train.epochs=3] [--device=cuda]
    python recipes/captioning_kd.py hparams/captioning_kd/student_seqkd_contrastive_audio.yaml
    python -m slukd.captioning.report results/captioning_kd/demo/seed0

Rerunning the same command resumes; the logic lives in slukd.captioning.run.
"""

import sys
from pathlib import Path

import yaml

from slukd.captioning.run import load_config, run
from slukd.utils.logging import setup_logging


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__)
        return 2
    cfg = load_config(argv[0], argv[1:])
    out = Path(cfg["output_folder"])
    setup_logging(log_file=out / "log.txt")
    results = run(cfg, resolved_text=yaml.safe_dump(cfg, sort_keys=False))
    test = results["test"]
    print(f"{cfg['row']}: CIDEr-D {test['CIDEr_D']:.3f}  BLEU-4 {test['BLEU_4']:.3f}  ROUGE-L {test['ROUGE_L']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
