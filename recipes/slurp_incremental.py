#!/usr/bin/env python3
"""Class-incremental end-to-end SLU on SLURP with rehearsal and knowledge distillation (one YAML per table row).

    python recipes/slurp_incremental.py hparams/slurp_incremental/seq_kd.yaml [--seed 1] [--key value ...]
    python recipes/slurp_incremental.py hparams/slurp_incremental/seq_kd.yaml --task 2     # one task per job
    torchrun --nproc_per_node=4 recipes/slurp_incremental.py hparams/slurp_incremental/seq_kd.yaml --device cuda

Rerunning the same command resumes where it stopped. The logic lives in :mod:`slukd.continual.loop`.
"""

import sys

from slukd.continual.loop import main

if __name__ == "__main__":
    sys.exit(main())
