"""The results table across runs of both recipes (``slukd report PATH...``).

A run folder has ``run_info.json`` (its identity: row, seed and every setting that can change its results). Runs
are grouped into table rows by (kind, row name, settings fingerprint without the seed): a row holds runs that
differ only in the seed. Rules:

- two runs of one group with the same seed: refused (:class:`ReportError` naming both folders);
- one row name with different settings: separate table rows, labelled, with a warning naming the differing keys;
- incomplete runs (a continual run with unfinished tasks, a captioning run without ``results.json``) and shortened
  runs (SpeechBrain ``--debug``) never enter a mean: they are listed apart with how far they got;
- every metric is in percent (CIDEr-D, SPIDEr, BLEU, METEOR, ROUGE-L and accuracies x 100; both WERs in percent:
  transcript only and full target); times in seconds or minutes, optimiser steps per run, as their column says;
- runs made with different result-affecting code (the code fingerprint of their step results) or on different data
  (the data digest) are never averaged together: they form separate rows, labelled with the files (or data) that
  differ; a run whose own steps were made by different code is listed apart;
- neighbouring rows (ranked by the main metric) are compared with the statistics of :mod:`slukd.report.stats`:
  paired by seed for continual rows of one split (they share task 1 within a seed), Welch otherwise (joint against
  continual rows, captioning rows); pairs whose 95% interval includes 0 are listed as not ranked;
- reading never writes: ``slukd report`` leaves every run folder as it is and writes only where ``--out`` says.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slukd.utils.io import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["ReportError", "find_runs", "summarise", "group_runs", "aggregate", "format_table", "report_runs",
           "within_spread"]  # fmt: skip


from slukd.report.continual import ReportError  # noqa: E402 - one error class for every report

#: (column, key, unit) per kind; summaries already hold these units.
COLUMNS = {
    "continual": [
        ("Avg Acc", "avg_acc", "%"),
        ("Last Acc", "last_acc", "%"),
        ("Avg WER (transcript)", "avg_wer", "%"),
        ("Avg WER (full target)", "avg_full_wer", "%"),
        ("Avg SLU-F1", "avg_slu_f1", "%"),
        ("Last SLU-F1", "last_slu_f1", "%"),
        ("BWT", "bwt", "%"),
        ("Forgetting", "forgetting", "%"),
        ("Task-1 Acc", "first_task_acc", "%"),
        ("Optimiser steps", "optimizer_steps", "steps"),
        ("Wall", "wall_s", "s"),
    ],
    "captioning": [
        ("CIDEr-D", "CIDEr_D", "%"),
        ("% of teacher", "vs_teacher", "%"),
        ("BLEU-4", "BLEU_4", "%"),
        ("METEOR", "METEOR", "%"),
        ("ROUGE-L", "ROUGE_L", "%"),
        ("SPIDEr", "SPIDEr", "%"),
        ("Params", "params_M", "M"),
        ("Optimiser steps", "steps", "steps"),
        ("Train", "train_minutes", "min"),
    ],
}
MAIN_METRIC = {"continual": "avg_acc", "captioning": "CIDEr_D"}
TITLES = {"continual": "Class-incremental SLU", "captioning": "Audio captioning"}


# ---------------------------------------------------------------------------------------------------- runs
def find_runs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Run folders among ``paths``: a folder with ``run_info.json`` is a run; otherwise its sub-folders are searched
    (so ``results/demo`` finds ``results/demo/<row>/seed<k>``). Cache folders are skipped."""
    runs: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise ReportError(f"{p}: not a folder")
        if (p / "run_info.json").is_file():
            runs.append(p)
            continue
        found = sorted({q.parent for q in p.rglob("run_info.json")})
        if not found:
            raise ReportError(f"{p}: no run folder (run_info.json) inside")
        runs.extend(found)
    return runs


def _kind(run: Path, identity: dict[str, Any]) -> str:
    if (run / "results.json").is_file() or "teacher_folder" in identity.get("settings", {}):
        return "captioning"
    return "continual"


def _teacher_cider(folder: str | None, cache: dict[str, float | None]) -> float | None:
    if not folder:
        return None
    if folder not in cache:
        path = Path(folder) / "results.json"
        try:
            cache[folder] = float(json.loads(path.read_text(encoding="utf-8"))["test"]["CIDEr_D"])
        except (OSError, ValueError, KeyError, TypeError):
            cache[folder] = None
    return cache[folder]


def _trained_steps(r: dict[str, Any]) -> float | None:
    """The optimiser steps a captioning run trained (its budget). Results with ``best_steps`` hold the total in
    ``steps``; older results hold in ``steps`` the counter of the best checkpoint (restored before it was read), so
    the total is ``steps · epochs / best_epoch`` (every epoch has the same number of steps)."""
    steps = r.get("steps")
    if steps is None or "best_steps" in r:
        return steps
    epochs, best = r.get("epochs"), r.get("best_epoch")
    if not epochs or not best:
        return steps
    return round(steps * epochs / best)


def _captioning_summary(run: Path, teacher_cache: dict[str, float | None]) -> tuple[bool, str, dict[str, Any]]:
    path = run / "results.json"
    if not path.is_file():
        times = run / "epoch_times.json"
        n = len(json.loads(times.read_text(encoding="utf-8"))) if times.is_file() else 0
        return False, f"{n} epoch(s) trained, not tested", {}
    try:
        r = json.loads(path.read_text(encoding="utf-8"))
        test = r["test"]
    except (ValueError, KeyError) as err:
        raise ReportError(f"{path}: unreadable results ({err})") from err
    m = {k: (100.0 * test[k] if test.get(k) is not None else None) for k in ("CIDEr_D", "BLEU_4", "METEOR",
                                                                              "ROUGE_L", "SPIDEr")}  # fmt: skip
    t = _teacher_cider(r.get("teacher"), teacher_cache) if r.get("role") != "teacher" else test["CIDEr_D"]
    m["vs_teacher"] = 100.0 * test["CIDEr_D"] / t if t else None
    m["params_M"] = r.get("params", 0) / 1e6
    m["train_minutes"] = r.get("train_minutes")
    m["steps"] = _trained_steps(r)
    m["code"], m["device"] = r.get("code") or {}, r.get("device")
    notes = {"kd": r.get("kd"), "captioned_fraction": r.get("captioned_fraction"), "audio_only": r.get("audio_only"),
             "tokenizer": test.get("tokenizer"), "role": r.get("role")}  # fmt: skip
    return True, "finished", {**m, "notes": notes}


def _continual_summary(run: Path) -> tuple[bool, str, dict[str, Any]]:
    """Read (never write) a continual run's step results: completeness, progress and metrics in percent."""
    from slukd.report.continual import summarise_run

    if not any((run / "results").glob("step*.json")):
        return False, "no task finished", {}
    s = summarise_run(run)
    pct = {k: 100.0 * s[k] if s[k] is not None and not math.isnan(s[k]) else None
           for _, k, u in COLUMNS["continual"] if u == "%"}  # fmt: skip
    opt = s["optimizer_steps"]
    m = {**pct, "wall_s": s["wall_s"], "last_wer": 100.0 * s["last_wer"],
         "optimizer_steps": None if math.isnan(opt) else opt,
         "acc_per_step": [100.0 * a for a in s["acc_per_step"]],
         "code": s["code"], "data": s["data"], "device": s["device"],
         "notes": {"valid_scope": s.get("valid_scope"), "first_task_reused": s.get("first_task_reused"),
                   "skipped": sum(s.get("skipped", {}).values()),
                   "memory_after_task1": _task1_memory(s["memory_per_task"])}}  # fmt: skip
    if len(s["code_fingerprints"]) > 1:
        return False, f"its steps were made by different code ({', '.join(s['code_fingerprints'])})", m
    return bool(s["complete"]), f"{s['steps_done']}/{s['n_steps']} tasks", m


def _task1_memory(mems: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The memory after task 1 (what task 2 uses): rule, quota, items, and the plugin when it is not rehearsal."""
    m = mems[0] if mems else None
    if m is None:
        return None
    return {
        "rule": m.get("rule"),
        "quota": m.get("quota_per_class"),
        "total": m.get("total"),
        "plugin": m.get("plugin"),
    }


def summarise(run: str | os.PathLike, teacher_cache: dict[str, float | None] | None = None) -> dict[str, Any]:
    """One run: kind, row, seed, group (settings fingerprint without the seed), completeness and metrics."""
    run = Path(run)
    info_path = run / "run_info.json"
    try:
        identity = json.loads(info_path.read_text(encoding="utf-8")).get("identity", {})
    except (OSError, ValueError) as err:
        raise ReportError(f"{info_path}: unreadable run record ({err})") from err
    settings = {k: v for k, v in identity.get("settings", {}).items() if k != "seed"}
    kind = _kind(run, identity)
    if kind == "captioning":
        complete, progress, metrics = _captioning_summary(run, {} if teacher_cache is None else teacher_cache)
    else:
        complete, progress, metrics = _continual_summary(run)
    code = metrics.get("code") or {}
    data = metrics.get("data") or identity.get("data")
    blob = json.dumps({"settings": settings, "world": identity.get("world_size", 1), "code": code.get("fingerprint"),
                       "data": data}, sort_keys=True, default=str)  # fmt: skip
    return {
        "run_dir": str(run),
        "kind": kind,
        "row": identity.get("row", run.parent.name),
        "seed": identity.get("seed"),
        "settings": settings,
        "split": settings.get("split"),
        "code": code,
        "data": data,
        "group": hashlib.sha256(blob.encode()).hexdigest()[:12],
        "shortened": bool(identity.get("shortened", False)),
        "complete": complete,
        "progress": progress,
        "metrics": metrics,
    }


# ---------------------------------------------------------------------------------------------------- groups
def _diff_keys(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def group_runs(summaries: Sequence[dict[str, Any]]) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """(groups of complete runs differing only in the seed, runs left out: incomplete or shortened)."""
    left_out = [s for s in summaries if not s["complete"] or s["shortened"]]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for s in summaries:
        if s["complete"] and not s["shortened"]:
            groups.setdefault((s["kind"], s["row"], s["group"]), []).append(s)
    for runs in groups.values():
        seen: dict[Any, str] = {}
        for r in runs:
            if r["seed"] in seen:
                raise ReportError(
                    f"two runs of row {r['row']!r} with the same settings and seed {r['seed']}: {seen[r['seed']]} and "
                    f"{r['run_dir']}; report one of them"
                )
            seen[r["seed"]] = r["run_dir"]
    by_name: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for key in groups:
        by_name.setdefault(key[:2], []).append(key)
    for (_kind, row), keys in by_name.items():
        if len(keys) > 1:
            first = groups[keys[0]][0]
            for key in keys[1:]:
                other = groups[key][0]
                diff = _diff_keys(first["settings"], other["settings"])
                parts = [f"{k}={other['settings'].get(k)}" for k in diff[:3]]
                code = code_difference(first.get("code") or {}, other.get("code") or {})
                if code:
                    parts.append(f"code: {code}")
                if first.get("data") != other.get("data"):
                    parts.append(f"data {str(other.get('data'))[:8]}")
                data = ["data"] if first.get("data") != other.get("data") else []
                what = ", ".join(diff[:8] + (["code"] if code else []) + data)
                logger.warning("row %r appears with different settings (%s): reported as separate rows", row, what)
                for r in groups[key]:
                    r["label"] = f"{row} [" + ", ".join(parts) + "]"
    return list(groups.values()), left_out


def code_difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    """The result-affecting code that differs between two code records (:func:`slukd.utils.provenance.code_record`),
    in words: the files that differ (at most 4 named), or the torch / SpeechBrain versions; "" when the same."""
    if a.get("fingerprint") == b.get("fingerprint"):
        return ""
    if not a or not b:
        return "not recorded in one of them"
    fa, fb = a.get("files") or {}, b.get("files") or {}
    files = sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))
    parts = [", ".join(files[:4]) + (f" and {len(files) - 4} more" if len(files) > 4 else "")] if files else []
    for lib in ("torch", "speechbrain"):
        if a.get(lib) != b.get(lib):
            parts.append(f"{lib} {a.get(lib)} vs {b.get(lib)}")
    return "; ".join(parts) or "fingerprint differs"


def _row_key(kind: str, row: str) -> tuple[int, str]:
    from slukd.report.continual import ROW_ORDER

    order = ROW_ORDER if kind == "continual" else ["teacher"]
    return (order.index(row) if row in order else len(order), row)


def aggregate(groups: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per group: label, kind, n, seeds and (mean, sample std) of every metric (std 0 for one run)."""
    out = []
    for runs in groups:
        kind = runs[0]["kind"]
        agg: dict[str, Any] = {
            "label": runs[0].get("label", runs[0]["row"]),
            "row": runs[0]["row"],
            "kind": kind,
            "n": len(runs),
            "seeds": sorted(r["seed"] for r in runs),
            "split": runs[0].get("split"),
            "notes": runs[0]["metrics"].get("notes", {}),
            "notes_all": [r["metrics"].get("notes", {}) for r in runs],
            "runs": sorted(r["run_dir"] for r in runs),
            "per_seed": {},
        }
        for _, k, _ in COLUMNS[kind]:
            per_seed = {r["seed"]: r["metrics"].get(k) for r in runs}
            per_seed = {
                sd: v for sd, v in per_seed.items() if v is not None and not (isinstance(v, float) and math.isnan(v))
            }
            agg["per_seed"][k] = per_seed
            vals = list(per_seed.values())
            if not vals:
                agg[k] = (float("nan"), float("nan"))
                continue
            m = sum(vals) / len(vals)
            sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
            agg[k] = (m, sd)
        if kind == "continual":
            curves = [r["metrics"]["acc_per_step"] for r in runs]
            n = min(len(c) for c in curves)
            agg["acc_per_step"] = [sum(c[i] for c in curves) / len(curves) for i in range(n)]
            agg["acc_per_step_std"] = [_std([c[i] for c in curves]) for i in range(n)]
        out.append(agg)
    return sorted(out, key=lambda a: (a["kind"], _row_key(a["kind"], a["row"]), a["label"]))


def _std(vals: Sequence[float]) -> float:
    """Sample standard deviation (0 for one value)."""
    if len(vals) < 2:
        return 0.0
    m = sum(vals) / len(vals)
    return math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def is_paired(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two aggregated rows pair by seed: continual rows of one split, neither of them joint (rows of one
    split share task 1 within a seed; the joint row trains one task on everything)."""
    return (a["kind"] == b["kind"] == "continual" and a.get("split") == b.get("split")
            and "joint" not in (a.get("split"), b.get("split")))  # fmt: skip


def difference(a: dict[str, Any], b: dict[str, Any], key: str):
    """``a - b`` on metric ``key`` (:class:`slukd.report.stats.Diff`): paired by seed when :func:`is_paired`,
    else Welch."""
    from slukd.report.stats import paired, welch

    va, vb = a["per_seed"].get(key, {}), b["per_seed"].get(key, {})
    return paired(va, vb) if is_paired(a, b) else welch(list(va.values()), list(vb.values()))


def within_spread(rows: Sequence[dict[str, Any]], key: str) -> list[tuple[str, str, Any]]:
    """Neighbouring rows (ranked by ``key``'s mean) that cannot be ranked: ``(a, b, diff)`` for each pair whose
    95% interval of ``a - b`` (:func:`difference`) includes 0 or does not exist (fewer than 2 seeds)."""
    ranked = sorted((r for r in rows if not math.isnan(r[key][0])), key=lambda r: -r[key][0])
    pairs = []
    for a, b in zip(ranked, ranked[1:]):
        d = difference(a, b, key)
        if not d.shown or d.lo <= 0:
            pairs.append((a["label"], b["label"], d))
    return pairs


def _cell(m: float, sd: float, n: int, unit: str) -> str:
    if m is None or math.isnan(m):
        return "-"
    d = 0 if unit in ("s", "steps") else 2
    return f"{m:.{d}f} ± {sd:.{d}f}" if n > 1 else f"{m:.{d}f}"


#: CSV column suffix per unit (clean names: ``avg_acc_pct``, ``wall_s``, ``params_m``, ``optimizer_steps``)
_UNIT_SUFFIX = {"%": "_pct", "s": "_s", "M": "_m", "min": "_min", "steps": ""}


def _head(col: str, unit: str) -> str:
    return col if unit == "steps" else f"{col} ({unit})"


def _csv_name(key: str, unit: str) -> str:
    key = key.lower()
    suffix = _UNIT_SUFFIX[unit]
    return key if key.endswith(suffix) else key + suffix


def table_frame(rows: Sequence[dict[str, Any]], kind: str):
    """A pandas DataFrame of one kind's rows: one line per seed (``stat = "seed"``) and the ``mean`` and ``std``
    lines of each row beside them; columns ``split, method, stat, seed, runs`` then one per metric, named
    ``<metric>_<unit>`` (``avg_acc_pct``, ``wall_s``, ``optimizer_steps``)."""
    import pandas as pd

    cols = COLUMNS[kind]
    names = [_csv_name(k, u) for _, k, u in cols]
    records = []
    for r in rows:
        if r["kind"] != kind:
            continue
        base = {"split": r.get("split") or "", "method": r["label"], "runs": r["n"]}
        for seed in r["seeds"]:
            vals = {n: r["per_seed"].get(k, {}).get(seed) for n, (_, k, _) in zip(names, cols)}
            records.append({**base, "stat": "seed", "seed": seed, **vals})
        for i, stat in enumerate(("mean", "std")):
            vals = {n: (None if math.isnan(r[k][i]) else r[k][i]) for n, (_, k, _) in zip(names, cols)}
            records.append({**base, "stat": stat, "seed": None, **vals})
    frame = pd.DataFrame.from_records(records, columns=["split", "method", "stat", "seed", "runs", *names])
    frame["seed"] = frame["seed"].astype("Int64")
    return frame


def delta_text(d: Any) -> str:
    """A :class:`slukd.report.stats.Diff` as ``+1.23* [+0.45, +2.01]`` (``*``: the 95% interval excludes 0), or
    ``+1.23 (no interval)`` where there are too few seeds."""
    if not d.shown:
        return f"{d.mean:+.2f} (no interval)"
    star = "*" if d.lo > 0 or d.hi < 0 else ""
    return f"{d.mean:+.2f}{star} [{d.lo:+.2f}, {d.hi:+.2f}]"


#: the SLU table's reference row: every continual row's Avg Acc against it, paired by seed within its split
BASELINE_ROW = "finetune"
BASELINE_HEAD = "Δ Avg Acc vs finetune [95% CI]"


def _vs_baseline(r: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    """Row ``r``'s Avg Acc minus fine-tuning's of the same split (paired by seed), "-" for joint, fine-tuning itself
    and a split without one fine-tuning row named ``finetune``."""
    if r["row"] == BASELINE_ROW or r.get("split") == "joint":
        return "-"
    base = [b for b in rows if b["label"] == BASELINE_ROW and b.get("split") == r.get("split")]
    return delta_text(difference(r, base[0], "avg_acc")) if len(base) == 1 else "-"


def format_table(rows: Sequence[dict[str, Any]], kind: str, fmt: str = "md") -> str:
    """The table of one kind: one line per row, ``mean ± std`` over seeds (units in the header); SLU tables end with
    each row's Avg Acc difference to fine-tuning (:data:`BASELINE_HEAD`) when fine-tuning was run. ``fmt="csv"``:
    :func:`table_frame` as CSV (per-seed lines beside each row's mean and std)."""
    cols = COLUMNS[kind]
    rows = [r for r in rows if r["kind"] == kind]
    if fmt == "md":
        delta = kind == "continual" and any(r["label"] == BASELINE_ROW for r in rows)
        heads = ["method", "runs"] + [_head(c, u) for c, _, u in cols] + ([BASELINE_HEAD] if delta else [])
        lines = ["| " + " | ".join(heads) + " |", "|---" * len(heads) + "|"]
        for r in rows:
            cells = [r["label"], str(r["n"])] + [_cell(*r[k], r["n"], u) for _, k, u in cols]
            lines.append("| " + " | ".join(cells + ([_vs_baseline(r, rows)] if delta else [])) + " |")
        return "\n".join(lines) + "\n"
    return table_frame(rows, kind).to_csv(index=False, float_format="%.4f", lineterminator="\n")


def _notes_md(rows: Sequence[dict[str, Any]], kind: str) -> str:
    """How the rows' runs were made, where it matters for reading them: the checkpoint selection of every SLU row
    (and the rows that differ from the rest), task-1 reuse, and skipped items."""
    if kind != "continual" or not rows:
        return ""
    scopes = {r["label"]: sorted({str(n.get("valid_scope")) for n in r["notes_all"]}) for r in rows}
    common = {s for v in scopes.values() for s in v}
    if len(common) == 1:
        from slukd.report.continual import SCOPE_TEXT

        (scope,) = common
        lines = [f"Checkpoints selected on {SCOPE_TEXT.get(scope, scope)} (`valid_scope: {scope}`) in every run."]
    else:
        lines = ["Checkpoint selection differs between rows: "
                 + "; ".join(f"{k}: {'/'.join(v)}" for k, v in scopes.items()) + "."]  # fmt: skip
    reused = sum(bool(n.get("first_task_reused")) for r in rows for n in r["notes_all"])
    total = sum(len(r["notes_all"]) for r in rows)
    lines.append(f"Task 1 taken from the shared first-task cache in {reused} of {total} runs (same results as "
                 "training it; see the README).")  # fmt: skip
    mem = {}
    for r in rows:
        m = {json.dumps(n.get("memory_after_task1"), sort_keys=True) for n in r["notes_all"]}
        m.discard("null")
        if m:
            vals = [json.loads(x) for x in sorted(m)]
            mem[r["label"]] = "; ".join(
                (f"{v['plugin']}'s memory: " if v.get("plugin") else "")
                + f"{v['rule']}, {v['total']} items" + (f" ({v['quota']} per scenario)" if v.get("quota") is not None
                                                        else "") for v in vals)  # fmt: skip
    if mem:
        shown = "; ".join(f"{k}: {v}" for k, v in mem.items())
        lines.append(f"Memory after task 1 (what task 2 uses): {shown} (per task: each run's report.md).")
    skipped = {r["label"]: sum(int(n.get("skipped") or 0) for n in r["notes_all"]) for r in rows}
    bad = {k: v for k, v in skipped.items() if v}
    lines.append("Items skipped or not scorable: " + (", ".join(f"{k} {v}" for k, v in bad.items()) if bad else
                                                       "none in any run") + " (per run: report.md).")  # fmt: skip
    return "\n".join(f"- {line}" for line in lines) + "\n"


def _left_out_md(left: Sequence[dict[str, Any]]) -> str:
    if not left:
        return ""
    lines = ["", "Left out of every mean (incomplete or shortened runs):", ""]
    for s in sorted(left, key=lambda s: (s["row"], str(s["seed"]))):
        why = "shortened (--debug)" if s["shortened"] else s["progress"]
        lines.append(f"- {s['row']} seed {s['seed']}: {why} ({s['run_dir']})")
    return "\n".join(lines) + "\n"


def _figure(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Intent accuracy on the seen tasks after each task: mean over seeds with a ± 1 std band, one line per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slukd.report.continual import _save_fig

    fig, ax = plt.subplots(figsize=(6, 4))
    n_max = 1
    for r in rows:
        acc, sd = r["acc_per_step"], r.get("acc_per_step_std") or [0.0] * len(r["acc_per_step"])
        x = list(range(1, len(acc) + 1))
        n_max = max(n_max, len(acc))
        (line,) = ax.plot(x, acc, marker="o", label=f"{r['label']} (n={r['n']})")
        if r["n"] > 1:
            ax.fill_between(x, [a - s for a, s in zip(acc, sd)], [a + s for a, s in zip(acc, sd)],
                            color=line.get_color(), alpha=0.15, linewidth=0)  # fmt: skip
    ax.set_xticks(range(1, n_max + 1))
    ax.set_xlabel("after task")
    ax.set_ylabel("intent accuracy on seen tasks (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Intent accuracy after each task (mean ± std over seeds)")
    ax.legend(fontsize=6)
    _save_fig(fig, path)
    plt.close(fig)


def _spread_md(rows: Sequence[dict[str, Any]], kind: str) -> list[str]:
    """Markdown lines: neighbours on the main metric whose difference is not shown (see :func:`within_spread`)."""
    close = within_spread(rows, MAIN_METRIC[kind])
    if not close:
        return []
    metric = next(c for c, k, _ in COLUMNS[kind] if k == MAIN_METRIC[kind])
    out = [f"Not ranked (neighbours on {metric} whose 95% interval of the difference includes 0, or has too few "
           "seeds; paired by seed within a continual split, Welch otherwise):", ""]  # fmt: skip
    out += [f"- {a} vs {b}: {d.text()}" for a, b, d in close]
    return [*out, ""]


def _teacher_md(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown lines: each captioning student's CIDEr-D against its teacher's
    (:func:`slukd.report.caption_claims.teacher_diff`: one-sample against a single teacher run, else Welch)."""
    from slukd.report.caption_claims import teacher_diff
    from slukd.report.stats import verdict

    teachers = [r for r in rows if r["row"] == "teacher"]
    students = [r for r in rows if r["row"] != "teacher"]
    if len(teachers) != 1 or not students:
        return []
    t = teachers[0]
    if len(t["per_seed"].get("CIDEr_D", {})) == 1:
        head = ("Students against the teacher (CIDEr-D, student − teacher; one teacher run, the model every student "
                "learnt from, so its score is a fixed value and the 95% interval is the students' one-sample "
                "t-interval: it says whether a row reaches this teacher, not teachers in general):")  # fmt: skip
    else:
        head = "Students against the teacher (CIDEr-D, Welch 95% interval of student − teacher):"
    out = [head, ""]
    for r in students:
        d = teacher_diff(r, t)
        out.append(f"- {r['label']}: {d.text()}; below the teacher: {verdict(d, -1)}")
    return [*out, ""]


def report_runs(paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike | None = None,
                paper: str | None = None, cross: bool = False) -> str:  # fmt: skip
    """Summarise every run under ``paths`` (reading only: no run folder is written) and return the Markdown report. With
    ``out_dir`` also write ``table_<kind>.md``/``.csv`` (and ``acc_per_step.png``) there; with ``paper``
    (``slurp3``/``slurp6``) the SLU table also gets the paper's numbers and claims (:mod:`slukd.report.paper`); with
    ``cross`` the cross table of KD terms and continual methods follows (:mod:`slukd.report.cross`)."""
    teacher_cache: dict[str, float | None] = {}
    summaries = [summarise(r, teacher_cache) for r in find_runs(paths)]
    groups, left = group_runs(summaries)
    rows = aggregate(groups)
    if not rows and not left:
        raise ReportError(f"no run under {', '.join(map(str, paths))}")
    parts = []
    for kind in ("continual", "captioning"):
        kind_rows = [r for r in rows if r["kind"] == kind]
        kind_left = [s for s in left if s["kind"] == kind]
        if not kind_rows and not kind_left:
            continue
        steps = ("all tasks of a run" if kind == "continual" else
                 "the run's training budget (the model tested is its best validation checkpoint)")  # fmt: skip
        intro = ("Mean ± sample std over the seeds of each row; percent unless the header says otherwise; optimiser "
                 f"steps: {steps}.")  # fmt: skip
        if kind == "continual" and any(r["label"] == BASELINE_ROW for r in kind_rows):
            intro += (f" {BASELINE_HEAD}: the row's Avg Acc minus fine-tuning's, paired by seed (rows of a split share "
                      "task 1 within a seed), with its 95% t-interval (`*`: the interval excludes 0).")  # fmt: skip
        md = [f"## {TITLES[kind]}", "", intro, ""]
        if kind_rows:
            md.append(format_table(kind_rows, kind))
            md.append(_notes_md(kind_rows, kind))
            md += _spread_md(kind_rows, kind)
            if kind == "captioning":
                from slukd.report.caption_claims import format_caption_claims

                md += _teacher_md(kind_rows)
                md += format_caption_claims(kind_rows)
            if kind == "continual" and paper:
                from slukd.report.paper import format_paper_section

                md.append(format_paper_section(kind_rows, paper))
        md.append(_left_out_md(kind_left))
        text = "\n".join(md)
        parts.append(text)
        if out_dir is not None:
            out = Path(out_dir)
            atomic_write_text(out / f"table_{kind}.md", text)
            atomic_write_text(out / f"table_{kind}.csv", format_table(kind_rows, kind, "csv"))
            if kind == "continual" and kind_rows:
                _figure(kind_rows, out / "acc_per_step.png")
    if cross:
        from slukd.report.cross import cross_table

        text = cross_table(rows)
        parts.append(text)
        if out_dir is not None:
            atomic_write_text(Path(out_dir) / "table_cross.md", text)
    return "\n".join(parts)
