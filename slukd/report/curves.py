"""Loss and validation curves of a training stage, read from SpeechBrain's ``train_log.txt`` and drawn as a figure.

A line of the log looks like ``task: 2, epoch: 3, lr: 1.00e-03 - train loss: 2.49, train kd_seq: 1.95 - valid loss:
4.26, valid intent_acc: 0.55``. :func:`read_train_log` returns one dict per epoch; :func:`plot_train_log` draws the
train and validation losses, the supervised loss (``train sup``) and every KD term on the left and the validation
metrics in percent (intent accuracy, CIDEr-D x 100) on the right, with integer epoch ticks and a title.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["read_train_log", "plot_train_log"]

_FIELD = re.compile(r"^\s*(?:(train|valid|test)\s+)?([\w.\-]+):\s*(\S+)\s*$")


def read_train_log(path: str | os.PathLike) -> list[dict[str, float]]:
    """Epoch records of a SpeechBrain train log: {"epoch": e, "train loss": x, "valid intent_acc": y, ...}."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        rec: dict[str, float] = {}
        for part in re.split(r"\s-\s|,", line):
            m = _FIELD.match(part)
            if not m:
                continue
            stage, key, value = m.groups()
            try:
                rec[f"{stage} {key}" if stage else key] = float(value)
            except ValueError:
                continue
        if "epoch" in rec:
            records.append(rec)
    return records


def plot_train_log(log_path: str | os.PathLike, png_path: str | os.PathLike, title: str | None = None) -> Path | None:
    """Draw the curves of ``log_path`` into ``png_path`` (atomically); None (and a logged warning) when the log
    is missing or has no epoch (a figure never stops a run)."""
    try:
        records = read_train_log(log_path)
    except OSError:
        return None
    if not records:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from slukd.report.continual import _save_fig

        epochs = [r["epoch"] for r in records]
        from matplotlib.ticker import MaxNLocator

        losses = sorted({k for r in records for k in r
                         if k.endswith("loss") or k == "train sup" or " kd_" in k or " ao_" in k})  # fmt: skip
        metrics = sorted({k for r in records for k in r if k.startswith("valid ") and not k.endswith("loss")})
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        for k in losses:
            label = "train supervised loss" if k == "train sup" else k
            axes[0].plot(epochs, [r.get(k, float("nan")) for r in records], marker=".", label=label)
        axes[0].set_ylabel("loss")
        axes[0].set_title("losses")
        axes[0].legend(fontsize=6)
        for k in metrics:
            axes[1].plot(epochs, [100 * r.get(k, float("nan")) for r in records], marker="o", label=k)
        axes[1].set_ylabel("validation (%)")
        axes[1].set_title("validation")
        if metrics:
            axes[1].legend(fontsize=6)
        for ax in axes:
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.suptitle(title or Path(log_path).parent.name, fontsize=9)
        fig.tight_layout()
        _save_fig(fig, Path(png_path))
        plt.close(fig)
    except Exception as err:  # a figure must never stop a run
        logger.warning("curves of %s not drawn: %s", log_path, err)
        return None
    return Path(png_path)
