"""DER++, Dark Experience Replay (Buzzega et al. 2020), for seq2seq: rehearsal whose memory items also keep the
decoder's output logits of the model that stored them (at the end of the item's own task, teacher-forced on the gold
target). While later tasks train, the memory items of a batch pay, besides their cross-entropy (they are in the
training set, as in experience replay: DER++'s β term),

    L_der = α · mean_r [ mean over r's real target positions l and the vocabulary v of (z_s[r,l,v] − z_stored[r,l,v])² ]

with z_s the student's logits. The stored logits never change once written (they are the past model's, not the
previous task's: the difference from tok-KD). Kept as float16 in ``continual/derpp_logits_after_task<k>.pt``.
Row: ``derpp.yaml``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from speechbrain.utils.distributed import if_main_process

from slukd.continual.plugin import TaskView
from slukd.continual.rehearsal import Rehearsal
from slukd.utils.io import atomic_torch_save

__all__ = ["DERpp"]


class DERpp(Rehearsal):
    """DER++ (see the module docstring). ``selection`` / ``per_class`` / ``fraction``: the memory, as for
    :class:`Rehearsal`; ``alpha``: weight of the logit MSE; ``batch_size``: items per batch when storing logits."""

    name = "derpp"

    def __init__(self, selection: str = "random", per_class: int | None = None, fraction: float | None = None,
                 alpha: float = 0.5, batch_size: int = 8, rule: str = "fixed_quota") -> None:  # fmt: skip
        super().__init__(selection=selection, per_class=per_class, fraction=fraction, in_training=True, rule=rule)
        if alpha < 0:
            raise ValueError(f"DERpp alpha must be >= 0, got {alpha}")
        self.alpha, self.batch_size = float(alpha), int(batch_size)
        self.logits: dict[str, torch.Tensor] = {}

    def reset(self) -> None:
        super().reset()
        self.logits = {}

    def _logits_path(self, folder: str | os.PathLike, t: int) -> Path:
        return Path(folder) / "continual" / f"{self.name}_logits_after_task{t + 1}.pt"

    def save(self, folder: str | os.PathLike, t: int) -> None:
        super().save(folder, t)
        if self.memory is not None:
            atomic_torch_save(self.logits, self._logits_path(folder, t))

    def restore(self, folder: str | os.PathLike, t: int) -> None:
        super().restore(folder, t)
        if self.memory is None:
            return
        path = self._logits_path(folder, t)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: DER++ logits after task {t + 1} missing")
        self.logits = torch.load(path, map_location="cpu")

    @torch.no_grad()
    def after_task(self, task: TaskView) -> None:
        """Update the memory, then store the logits of its new items (main process)."""
        super().after_task(task)
        if self.memory is None or not if_main_process():
            return
        kept = set(self.memory.ids())
        self.logits = {i: z for i, z in self.logits.items() if i in kept}
        new = [i for i in self.memory.ids() if i not in self.logits]
        model, was_training = task.model, task.model.training
        model.eval()
        try:
            for batch in task.data.batches(new, self.batch_size):
                out = task.data.forward(model, batch)
                for k, item in enumerate(batch.id):
                    n = int(out["gold_mask"][k].sum())
                    self.logits[str(item)] = out["logits"][k, :n].detach().to("cpu", torch.float16).clone()
        finally:
            model.train(was_training)

    def batch_loss(self, brain: Any, batch: Any, out: dict[str, Any]) -> torch.Tensor | None:
        if not self.logits or self.alpha == 0:
            return None
        rows = [(k, self.logits[str(i)]) for k, i in enumerate(batch.id) if str(i) in self.logits]
        if not rows:
            return None
        z = out["logits"]
        sq = [((z[k, : s.shape[0]].float() - s.to(z.device).float()) ** 2).mean() for k, s in rows]
        return self.alpha * torch.stack(sq).mean()

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "alpha": self.alpha, "stored_logits": len(self.logits)}
