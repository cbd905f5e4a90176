"""The results table across runs of both recipes (``slukd report PATH...``).

A run folder has ``run_info.json`` (its identity: row, seed and every setting that can change its results). Runs
are grouped into table rows by (kind, row name, settings fingerprint without the seed): a row holds runs that
differ only in the seed. Rules:

- two runs of one group with the same seed: refused (:class:`ReportError` naming both folders);
- one row name with different settings: separate table rows, labelled, with a warning naming the differing keys;
- incomplete runs (a continual run with unfinished tasks, a captioning run without ``results.json``) and shortened
  runs (SpeechBrain ``--debug``) never enter a mean: they are listed apart with how far they got;
- every metric is in percent (CIDEr-D, SPIDEr, BLEU, METEOR, ROUGE-L and accuracies x 100; WER in percent); times
  in seconds or minutes, as their column says;
- rows whose means differ by less than the larger of their standard deviations are listed under "within spread"
  instead of being ranked.
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
        ("Avg WER", "avg_wer", "%"),
        ("Avg SLU-F1", "avg_slu_f1", "%"),
        ("Last SLU-F1", "last_slu_f1", "%"),
        ("BWT", "bwt", "%"),
        ("Forgetting", "forgetting", "%"),
        ("Task-1 Acc", "first_task_acc", "%"),
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
    notes = {"kd": r.get("kd"), "captioned_fraction": r.get("captioned_fraction"), "audio_only": r.get("audio_only"),
             "tokenizer": test.get("tokenizer"), "role": r.get("role")}  # fmt: skip
    return True, "finished", {**m, "notes": notes}


def _continual_summary(run: Path) -> tuple[bool, str, dict[str, Any]]:
    from slukd.report.continual import write_run_report

    if not any((run / "results").glob("step*.json")):
        return False, "no task finished", {}
    s = write_run_report(run, figures=True)
    pct = {k: 100.0 * s[k] if s[k] is not None and not math.isnan(s[k]) else None
           for _, k, u in COLUMNS["continual"] if u == "%"}  # fmt: skip
    m = {**pct, "wall_s": s["wall_s"], "last_wer": 100.0 * s["last_wer"],
         "acc_per_step": [100.0 * a for a in s["acc_per_step"]],
         "notes": {"valid_scope": s.get("valid_scope"), "first_task_reused": s.get("first_task_reused"),
                   "skipped": sum(s.get("skipped", {}).values())}}  # fmt: skip
    return bool(s["complete"]), f"{s['steps_done']}/{s['n_steps']} tasks", m


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
    blob = json.dumps({"settings": settings, "world": identity.get("world_size", 1)}, sort_keys=True, default=str)
    return {
        "run_dir": str(run),
        "kind": kind,
        "row": identity.get("row", run.parent.name),
        "seed": identity.get("seed"),
        "settings": settings,
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
            first = groups[keys[0]][0]["settings"]
            for key in keys[1:]:
                diff = _diff_keys(first, groups[key][0]["settings"])
                logger.warning("row %r appears with different settings (%s): reported as separate rows",
                               row, ", ".join(diff[:8]))  # fmt: skip
                other = groups[key][0]["settings"]
                label = f"{row} [" + ", ".join(f"{k}={other.get(k)}" for k in diff[:3]) + "]"
                for r in groups[key]:
                    r["label"] = label
    return list(groups.values()), left_out


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
            "notes": runs[0]["metrics"].get("notes", {}),
            "notes_all": [r["metrics"].get("notes", {}) for r in runs],
        }
        for _, k, _ in COLUMNS[kind]:
            vals = [r["metrics"].get(k) for r in runs]
            vals = [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
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
        out.append(agg)
    return sorted(out, key=lambda a: (a["kind"], _row_key(a["kind"], a["row"]), a["label"]))


def within_spread(rows: Sequence[dict[str, Any]], key: str) -> list[tuple[str, str]]:
    """Pairs of rows (ranked by ``key``'s mean, neighbours only) whose means differ by less than the larger std."""
    ranked = sorted((r for r in rows if not math.isnan(r[key][0])), key=lambda r: -r[key][0])
    pairs = []
    for a, b in zip(ranked, ranked[1:]):
        if a["n"] > 1 and b["n"] > 1 and a[key][0] - b[key][0] < max(a[key][1], b[key][1]):
            pairs.append((a["label"], b["label"]))
    return pairs


def _cell(m: float, sd: float, n: int, unit: str) -> str:
    if m is None or math.isnan(m):
        return "-"
    d = 0 if unit in ("s",) else 2 if unit in ("%", "M", "min") else 2
    return f"{m:.{d}f} ± {sd:.{d}f}" if n > 1 else f"{m:.{d}f}"


def format_table(rows: Sequence[dict[str, Any]], kind: str, fmt: str = "md") -> str:
    """The table of one kind: one line per row, ``mean ± std`` over seeds (units in the header)."""
    cols = COLUMNS[kind]
    rows = [r for r in rows if r["kind"] == kind]
    if fmt == "md":
        heads = ["method", "runs"] + [f"{c} ({u})" for c, _, u in cols]
        lines = ["| " + " | ".join(heads) + " |", "|---" * len(heads) + "|"]
        for r in rows:
            lines.append("| " + " | ".join([r["label"], str(r["n"])] + [_cell(*r[k], r["n"], u) for _, k, u in cols])
                         + " |")  # fmt: skip
        return "\n".join(lines) + "\n"
    unit_name = {"%": "pct", "s": "s", "M": "M", "min": "min"}
    heads = ["method", "runs", "seeds"] + [f"{k}_{unit_name[u]}_{s}" for _, k, u in cols for s in ("mean", "std")]
    lines = [",".join(heads)]
    for r in rows:
        vals = [r["label"], str(r["n"]), " ".join(map(str, r["seeds"]))]
        vals += [f"{v}" for _, k, _ in cols for v in r[k]]
        lines.append(",".join(vals))
    return "\n".join(lines) + "\n"


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slukd.report.continual import _save_fig

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for r in rows:
        acc = r["acc_per_step"]
        ax.plot(range(1, len(acc) + 1), acc, marker="o", label=f"{r['label']} (n={r['n']})")
    ax.set_xlabel("step (task)")
    ax.set_ylabel("intent accuracy on seen tasks (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=6)
    _save_fig(fig, path)
    plt.close(fig)


def report_runs(paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike | None = None,
                paper: str | None = None) -> str:  # fmt: skip
    """Summarise every run under ``paths`` (per-run reports are rewritten) and return the Markdown report. With
    ``out_dir`` also write ``table_<kind>.md``/``.csv`` (and ``acc_per_step.png``) there; with ``paper``
    (``slurp3``/``slurp6``) the SLU table also gets the paper's numbers and claims (:mod:`slukd.report.paper`)."""
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
        md = [f"## {TITLES[kind]}", "", "Mean ± sample std over the seeds of each row; percent unless the header "
              "says otherwise.", ""]  # fmt: skip
        if kind_rows:
            md.append(format_table(kind_rows, kind))
            md.append(_notes_md(kind_rows, kind))
            close = within_spread(kind_rows, MAIN_METRIC[kind])
            if close:
                md += ["Within spread (means differ by less than the larger std; not ranked):", ""]
                md += [f"- {a} vs {b}" for a, b in close]
                md.append("")
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
    return "\n".join(parts)
