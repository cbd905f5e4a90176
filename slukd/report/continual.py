"""Per-run report of a continual (class-incremental) run: matrices, summary metrics, figures.

A run folder (written by :mod:`slukd.continual.loop`) holds ``run_info.json`` (identity: row, seed, ...) and one
``results/step<t>.json`` per finished step ``t`` (1-based) with the test metrics of every task seen so far::

    {"step": t, "n_steps": T, "per_task": [{"task": j, "n": .., "intent_acc": .., "wer": .., "full_wer": ..,
     "slu_f1": ..}, ...], "seen": {...the same keys...}, "optimizer_steps": .., "continual": {"memory": {...}},
     "device": {...}, "code": {"fingerprint": .., "files": {..}}, "data_digest": .., "wall_s": .., "peak_rss_mb": ..}

(``wer``: transcript only; ``full_wer``: the whole decoded target, intent, slots and transcript, as the SLU paper's
WER; ``continual.memory``: the rehearsal memory after task t, what task t+1 rehearses, see
:meth:`slukd.continual.memory.RehearsalMemory.summary`; the last step has no update after it.)

From them (always recomputed, so a rerun after a kill gives the same report):

- ``R[i][j]`` = intent accuracy on task ``j``'s test items after step ``i`` (``j <= i``); same for WER and SLU-F1;
- Avg Acc = ``mean_i acc_seen(i)`` (accuracy on all test items seen after step ``i``), Last Acc = ``acc_seen(T)``;
- Avg WER / Avg SLU-F1 likewise over steps; BWT = ``mean_{j<T} (R[T][j] - R[j][j])``;
  forgetting = ``mean_{j<T} (max_{i<T} R[i][j] - R[T][j])``; first-task accuracy = ``R[0][0]``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slukd.utils.io import atomic_write_text

logger = logging.getLogger(__name__)

#: Paper row order; rows not listed follow alphabetically.
ROW_ORDER = [
    "joint",
    "finetune",
    "rehearsal_random",
    "rehearsal_herding",
    "rehearsal_5pct",
    "audio_kd",
    "tok_kd",
    "seq_kd",
    "audio_seq_kd",
    "seq_tok_kd",
    "all_kd",
    "audio_kd_random",
    "seq_kd_random",
]

#: (column, key, scale) of the summary table; accuracy/F1/WER shown in percent.
COLUMNS = [
    ("Avg Acc", "avg_acc", 100.0),
    ("Last Acc", "last_acc", 100.0),
    ("Avg WER (transcript)", "avg_wer", 100.0),
    ("Avg WER (full target)", "avg_full_wer", 100.0),
    ("Avg SLU-F1", "avg_slu_f1", 100.0),
    ("Last SLU-F1", "last_slu_f1", 100.0),
    ("BWT", "bwt", 100.0),
    ("Forgetting", "forgetting", 100.0),
    ("Task-1 Acc", "first_task_acc", 100.0),
    ("Optimiser steps", "optimizer_steps", 1.0),
    ("Wall (s)", "wall_s", 1.0),
]


class ReportError(RuntimeError):
    """A run folder that cannot be reported (missing or unreadable results)."""


# ---------------------------------------------------------------------------------------------------- one run
def load_steps(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The ``results/step<t>.json`` files of a run, ordered by step; errors name the bad file."""
    res_dir = Path(run_dir) / "results"
    files = sorted(res_dir.glob("step*.json"), key=lambda p: int(p.stem[4:]) if p.stem[4:].isdigit() else -1)
    steps = []
    for p in files:
        if not p.stem[4:].isdigit():
            continue
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
            _ = d["per_task"], d["seen"], d["step"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ReportError(f"{p}: unreadable step result ({err})") from err
        if d["step"] != int(p.stem[4:]):
            raise ReportError(f"{p}: field 'step' is {d['step']}, the file name says {p.stem[4:]}")
        steps.append(d)
    return steps


def matrix(steps: Sequence[dict[str, Any]], key: str) -> list[list[float | None]]:
    """``M[i][j]`` = metric ``key`` on task ``j``'s test items after step ``i`` (``None`` where ``j > i``)."""
    n = max((len(s["per_task"]) for s in steps), default=0)
    out = []
    for s in steps:
        row: list[float | None] = [None] * n
        for j, pt in enumerate(s["per_task"]):
            row[j] = pt.get(key)
        out.append(row)
    return out


def _mean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else float("nan")


def _continual(r: Sequence[Sequence[float | None]]):
    from slukd.metrics.continual import ContinualMetrics

    m = [[float("nan") if v is None else float(v) for v in row] for row in r]
    return ContinualMetrics.from_matrix(m, higher_is_better=True)


def backward_transfer(r: Sequence[Sequence[float | None]]) -> float:
    """BWT = mean over j < T-1 of R[T-1][j] - R[j][j] (NaN for a single step); :mod:`slukd.metrics.continual`."""
    bwt = _continual(r).bwt if len(r) > 1 else None
    return float("nan") if bwt is None else bwt


def forgetting(r: Sequence[Sequence[float | None]]) -> float:
    """Average forgetting = mean over j < T-1 of max_{j<=i<T-1} R[i][j] - R[T-1][j] (NaN for a single step)."""
    f = _continual(r).forgetting if len(r) > 1 else None
    return float("nan") if f is None else f


def summarise_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Summary metrics of one run (fractions; see the module docstring). Raises :class:`ReportError` when the run
    has no finished step."""
    run_dir = Path(run_dir)
    steps = load_steps(run_dir)
    if not steps:
        raise ReportError(f"{run_dir}: no results/step*.json (has the run finished a task?)")
    info: dict[str, Any] = {}
    info_path = run_dir / "run_info.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8")).get("identity", {})
    acc = matrix(steps, "intent_acc")
    n_steps = steps[-1].get("n_steps", len(steps))
    full = [s["seen"].get("full_wer") for s in steps]
    opt = [s.get("optimizer_steps") for s in steps]
    codes = [(s.get("code") or {}).get("fingerprint") for s in steps]
    return {
        "run_dir": str(run_dir),
        "row": info.get("row", run_dir.parent.name),
        "seed": info.get("seed"),
        "steps_done": len(steps),
        "n_steps": n_steps,
        "complete": len(steps) == n_steps,
        "avg_acc": _mean([s["seen"]["intent_acc"] for s in steps]),
        "last_acc": steps[-1]["seen"]["intent_acc"],
        "avg_wer": _mean([s["seen"]["wer"] for s in steps]),
        "last_wer": steps[-1]["seen"]["wer"],
        "avg_full_wer": _mean(full) if None not in full else float("nan"),
        "last_full_wer": full[-1] if full[-1] is not None else float("nan"),
        "optimizer_steps": float(sum(opt)) if None not in opt else float("nan"),
        "optimizer_steps_per_task": opt,
        "memory_per_task": [memory_record(s) for s in steps],
        "code": (steps[-1].get("code") or {}),
        "code_fingerprints": sorted({c for c in codes if c}),
        "code_recorded": None not in codes,
        "device": steps[-1].get("device"),
        "data": steps[-1].get("data_digest"),
        "avg_slu_f1": _mean([s["seen"]["slu_f1"] for s in steps]),
        "last_slu_f1": steps[-1]["seen"]["slu_f1"],
        "bwt": backward_transfer(acc),
        "forgetting": forgetting(acc),
        "first_task_acc": acc[0][0],
        "acc_per_step": [s["seen"]["intent_acc"] for s in steps],
        "wall_s": sum(float(s.get("wall_s", 0.0)) for s in steps),
        "peak_rss_mb": max(float(s.get("peak_rss_mb", 0.0)) for s in steps),
        "valid_scope": steps[0].get("valid_scope"),
        "skipped": skip_counts(steps[-1].get("data")),
        "kept_long": long_clip_counts(steps[-1].get("data")),
        "first_task_reused": bool((steps[0].get("first_task") or {}).get("reused", False)),
    }


def _fmt(x: float | None, scale: float = 100.0, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x * scale:.{digits}f}"


def _matrix_md(m: Sequence[Sequence[float | None]], scale: float) -> str:
    n = len(m[0]) if m else 0
    lines = ["| after step | " + " | ".join(f"task {j + 1}" for j in range(n)) + " |", "|---" * (n + 1) + "|"]
    for i, row in enumerate(m):
        lines.append(f"| {i + 1} | " + " | ".join(_fmt(v, scale) for v in row) + " |")
    return "\n".join(lines)


def write_run_report(run_dir: str | os.PathLike, figures: bool = True) -> dict[str, Any]:
    """Write ``report.csv``, ``report.md``, ``matrix_{intent_acc,wer,full_wer,slu_f1}.csv`` (pandas; percent) and
    the figures into the run folder (atomically, overwriting): the run's own report, written when it finishes.
    Returns the summary."""
    run_dir = Path(run_dir)
    summary = summarise_run(run_dir)
    steps = load_steps(run_dir)
    mats = {k: matrix(steps, k) for k in ("intent_acc", "wer", "full_wer", "slu_f1")}
    # one unit in every CSV: metrics in percent (columns named *_pct), times in seconds
    pct_keys = [k for _, k, scale in COLUMNS if scale == 100.0] + ["last_wer", "last_full_wer"]
    plain = ["optimizer_steps", "wall_s", "steps_done", "n_steps", "peak_rss_mb", "valid_scope", "first_task_reused"]
    import pandas as pd

    header = ["row", "seed"] + [f"{k}_pct" for k in pct_keys] + plain + ["skipped"]
    values = [summary["row"], summary["seed"]] + [_pct(summary[k]) for k in pct_keys]
    values += [summary[k] for k in plain] + [sum(summary["skipped"].values())]
    atomic_write_text(run_dir / "report.csv", pd.DataFrame([values], columns=header).to_csv(index=False))
    for k, m in mats.items():
        frame = pd.DataFrame(
            [[_pct(v) for v in row] for row in m], columns=[f"task{j + 1}_pct" for j in range(len(m[0]))]
        )
        frame.insert(0, "step", range(1, len(m) + 1))
        atomic_write_text(run_dir / f"matrix_{k}.csv", frame.to_csv(index=False))
    md = [
        f"# Run report: {summary['row']} (seed {summary['seed']})",
        "",
        f"Steps finished: {summary['steps_done']} of {summary['n_steps']}.",
        "",
        "| " + " | ".join(c for c, _, _ in COLUMNS) + " |",
        "|---" * len(COLUMNS) + "|",
        "| " + " | ".join(_fmt(summary[k], s, 2 if s != 1.0 else 0) for _, k, s in COLUMNS) + " |",
        "",
        *_run_notes(summary),
        "",
        "## Intent accuracy (%) per (step, task)",
        "",
        _matrix_md(mats["intent_acc"], 100.0),
        "",
        "## WER (%, transcript only) per (step, task)",
        "",
        _matrix_md(mats["wer"], 100.0),
        "",
        "## WER (%, full target: intent, slots and transcript) per (step, task)",
        "",
        _matrix_md(mats["full_wer"], 100.0),
        "",
        "## SLU-F1 (%) per (step, task)",
        "",
        _matrix_md(mats["slu_f1"], 100.0),
        "",
        *_memory_md(summary),
        *_provenance_md(summary),
    ]
    atomic_write_text(run_dir / "report.md", "\n".join(md))
    if figures:
        _run_figures(run_dir, summary, mats["intent_acc"])
    return summary


def memory_record(step: dict[str, Any]) -> dict[str, Any] | None:
    """The memory a step result records, with ``"plugin"``: the name of the plugin that keeps it; None when the run
    keeps no memory. Read from the runner's declared record (``memory``, from
    :meth:`slukd.continual.ContinualPlugin.memory_summary`); step results written before that record existed
    (no ``memory`` key) are read as they were written: the rehearsal plugin's ``continual.memory``, else the first
    plugin record shaped like a memory (``rule``, ``total``, ``per_class``; A-GEM's and DER++'s)."""
    if "memory" in step:
        return step["memory"]
    continual = step.get("continual") or {}
    if continual.get("memory") is not None:
        return continual["memory"]
    for name, rec in continual.items():
        if isinstance(rec, dict) and {"rule", "total", "per_class"} <= set(rec):
            return {**rec, "plugin": name}
    return None


def _memory_md(summary: dict[str, Any]) -> list[str]:
    """Markdown: the rehearsal memory after each task (rule, quota, items in all and per scenario; what the next
    task rehearses) and the task's optimiser steps."""
    lines = ["## Memory after each task and optimiser steps", ""]
    mems = summary["memory_per_task"]
    if all(m is None for m in mems):
        lines += ["No memory in any task (or none recorded by the code that made this run).", ""]
    plugins = {m["plugin"] for m in mems if m is not None and m.get("plugin")}
    if plugins:
        lines += [
            f"The memory is kept by the `{'`, `'.join(sorted(plugins))}` plugin (how it is used: the row file).",
            "",
        ]
    lines += ["| task | rule | quota per scenario | items after the task | per scenario | optimiser steps |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    last = summary["n_steps"] - 1
    for t, (m, n) in enumerate(zip(mems, summary["optimizer_steps_per_task"])):
        steps = "-" if n is None else str(n)
        if m is None or t == last:  # no memory, or the last task (no update after it)
            lines.append(f"| {t + 1} | - | - | - | - | {steps} |")
            continue
        quota = "-" if m.get("quota_per_class") is None else str(m["quota_per_class"])
        per = ", ".join(f"{c} {k}" for c, k in m.get("per_class", {}).items()) or "-"
        lines.append(f"| {t + 1} | {m.get('rule')} | {quota} | {m.get('total')} | {per} | {steps} |")
    return [*lines, ""]


def _provenance_md(summary: dict[str, Any]) -> list[str]:
    """Markdown: device, code version and fingerprint, data digest."""
    code, dev = summary.get("code") or {}, summary.get("device") or {}
    lines = ["## Provenance", ""]
    lines.append(f"- Device: {dev.get('device', 'not recorded')} ({dev.get('name', '?')}, {dev.get('cpus', '?')} CPUs)."
                 if dev else "- Device: not recorded.")  # fmt: skip
    if code:
        versions = f"slukd {code.get('slukd')}, torch {code.get('torch')}, SpeechBrain {code.get('speechbrain')}"
        lines.append(f"- Code: {versions}; result-affecting code fingerprint {code.get('fingerprint')}.")
    else:
        lines.append("- Code: not recorded.")
    if len(summary.get("code_fingerprints", [])) > 1:
        shown = ", ".join(summary["code_fingerprints"])
        lines.append(f"- Warning: the steps of this run were made by different code ({shown}).")
    lines.append(f"- Data digest: {summary.get('data') or 'not recorded'}.")
    return [*lines, ""]


def _pct(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else 100.0 * x


#: what each checkpoint-selection scope (``valid_scope``) selects on, in words
SCOPE_TEXT = {"seen": "the devel items of every scenario seen so far", "current": "the current task's devel items only"}


def _run_notes(summary: dict[str, Any]) -> list[str]:
    """Markdown lines: how checkpoints were selected, whether task 1 was reused, and every skipped item."""
    scope = summary.get("valid_scope")
    lines = [f"- Checkpoint selection: {scope} ({SCOPE_TEXT.get(scope, 'not recorded')})."]
    if summary.get("first_task_reused"):
        lines.append("- Task 1 was taken from the shared first-task cache (trained once for all rows of this seed).")
    skipped = summary.get("skipped", {})
    total = sum(skipped.values())
    detail = ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items()) if v)
    lines.append(f"- Items skipped or not scorable: {total}" + (f" ({detail})." if detail else "."))
    long = summary.get("kept_long") or {}
    if any(long.values()):  # kept, so not among the skipped; one clip can be both an outlier and cropped
        lines.append(f"- Long clips (kept, not skipped): {long.get('duration_outliers', 0)} longer than 4x the median "
                     f"duration; {long.get('audio_cropped', 0)} cropped to max_audio_seconds when loaded.")  # fmt: skip
    return lines


def skip_counts(data: dict[str, Any] | None) -> dict[str, int]:
    """Every count of items a step left out, from its ``data`` record, as ``{"<what>/<split>/<reason>": n}``
    (prepare and audio skips, test items outside the tasks, test labels without a token). Long clips that were kept
    (duration outliers, cropped clips) are not skipped items: :func:`long_clip_counts`."""
    out: dict[str, int] = {}
    if not data:
        return out
    for what in ("prepare_skipped", "audio_skipped"):
        for split, reasons in (data.get(what) or {}).items():
            for reason, n in (reasons or {}).items():
                out[f"{what}/{split}/{reason}"] = int(n)
    for what in ("test_outside_tasks", "test_unseen_intents", "test_intents_without_token",
                 "test_entity_types_without_token"):  # fmt: skip
        v = data.get(what) or {}
        n = sum(int(x) for x in v.values()) if isinstance(v, dict) else int(v)
        if n:
            out[what] = n
    return out


def long_clip_counts(data: dict[str, Any] | None) -> dict[str, int]:
    """Long clips a step kept: ``duration_outliers`` (longer than 4x the median) and ``audio_cropped`` (cropped to
    ``max_audio_seconds``); one clip may be both, so the two are never added up."""
    data = data or {}
    return {"duration_outliers": int(data.get("duration_outliers") or 0),
            "audio_cropped": int((data.get("audio_notes") or {}).get("cropped") or 0)}  # fmt: skip


def _save_fig(fig, path: Path) -> None:
    """Write a figure atomically through a unique temporary file (two writers of one figure never collide)."""
    from slukd.utils.io import atomic_write

    atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight"))


def _run_figures(run_dir: Path, summary: dict[str, Any], acc: list[list[float | None]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = list(range(1, len(summary["acc_per_step"]) + 1))
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(steps, [100 * a for a in summary["acc_per_step"]], marker="o")
    ax.set_xlabel("after task")
    ax.set_ylabel("intent accuracy on seen tasks (%)")
    ax.set_xticks(steps)
    ax.set_ylim(0, 100)
    ax.set_title(f"Intent accuracy after each task: {summary['row']}, seed {summary['seed']}", fontsize=9)
    _save_fig(fig, run_dir / "acc_per_step.png")
    plt.close(fig)

    n = len(acc[0])
    data = [[float("nan") if v is None else 100 * v for v in row] for row in acc]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * n, 1.0 + 0.8 * len(acc)))
    im = ax.imshow(data, vmin=0, vmax=100, cmap="viridis")
    for i, row in enumerate(data):
        for j, v in enumerate(row):
            if not math.isnan(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", color="w" if v < 60 else "k", fontsize=8)
    ax.set_xticks(range(n), [f"task {j + 1}" for j in range(n)])
    ax.set_yticks(range(len(acc)), [f"after task {i + 1}" for i in range(len(acc))])
    ax.set_title("Intent accuracy (%) per task after each task", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    _save_fig(fig, run_dir / "acc_matrix.png")
    plt.close(fig)
