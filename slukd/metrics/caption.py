"""Caption metrics over a whole split (corpus level, never averaged per batch), through pycocoevalcap.

BLEU-1..4, ROUGE-L and CIDEr-D are pure Python (pycocoevalcap's ``Cider`` is CIDEr-D: clipped n-gram counts,
Gaussian length penalty sigma 6, x10). METEOR 1.5 runs when Java is present. SPICE (and SPIDEr = (CIDEr-D + SPICE)/2)
runs only when the user supplies a folder holding the Stanford CoreNLP 3.6.0 jars (no download ever happens);
otherwise they are reported as ``None`` with the reason in ``skipped``.

Tokenisation: ``"simple"`` (default) is :func:`slukd.data.captions.normalize_caption` (lowercase, punctuation
removed), pure Python and deterministic; ``"ptb"`` uses pycocoevalcap's Stanford PTB tokenizer (Java).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from slukd.data.captions import normalize_caption

logger = logging.getLogger(__name__)

METRIC_NAMES = ["BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr_D", "SPICE", "SPIDEr"]


def java_available() -> bool:
    return shutil.which("java") is not None


def _tokenize(items: dict[str, list[str]], tokenizer: str) -> dict[str, list[str]]:
    if tokenizer == "simple":
        return {k: [normalize_caption(c) for c in v] for k, v in items.items()}
    if tokenizer == "ptb":
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in items.items()})
    raise ValueError(f"unknown tokenizer {tokenizer!r} (use 'simple' or 'ptb')")


def _spice(gts: dict[str, list[str]], res: dict[str, list[str]], corenlp_dir: Path) -> tuple[float, dict[str, float]]:
    """SPICE with pycocoevalcap's spice-1.0.jar and the user's CoreNLP jars on the class path (no download)."""
    import pycocoevalcap.spice as spice_pkg

    spice_dir = Path(spice_pkg.__file__).parent
    jars = sorted(str(p) for p in corenlp_dir.glob("*.jar"))
    classpath = os.pathsep.join([str(spice_dir / "spice-1.0.jar"), str(spice_dir / "lib" / "*")] + jars)
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.json", Path(tmp) / "out.json"
        data = [{"image_id": k, "test": res[k][0], "refs": gts[k]} for k in sorted(gts)]
        inp.write_text(json.dumps(data), encoding="utf-8")
        cmd = ["java", "-Xmx8G", "-cp", classpath, "edu.anu.spice.SpiceScorer", str(inp)]
        cmd += ["-out", str(out), "-subset", "-silent", "-cache", str(Path(tmp) / "cache")]
        subprocess.run(cmd, check=True, capture_output=True, timeout=3600)
        results = json.loads(out.read_text(encoding="utf-8"))
    per = {r["image_id"]: float(r["scores"]["All"]["f"]) for r in results}
    return sum(per.values()) / max(1, len(per)), per


def caption_metrics(
    predictions: dict[str, str],
    references: dict[str, list[str]],
    tokenizer: str = "simple",
    meteor: bool = True,
    spice_corenlp_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Corpus-level caption metrics.

    Args:
        predictions: item ID -> one predicted caption.
        references: item ID -> reference captions (at least one); same IDs as ``predictions``.
        tokenizer: ``"simple"`` or ``"ptb"`` (see module docstring).
        meteor: compute METEOR when Java is present.
        spice_corenlp_dir: folder with the Stanford CoreNLP 3.6.0 jars; SPICE/SPIDEr are skipped without it.

    Returns:
        ``{"BLEU_1".."BLEU_4", "METEOR", "ROUGE_L", "CIDEr_D", "SPICE", "SPIDEr": float | None, "n": int,
        "tokenizer": str, "skipped": {metric: reason}, "per_item_CIDEr_D": {id: float}}``.
    """
    if set(predictions) != set(references):
        only_p = sorted(set(predictions) - set(references))[:5]
        only_r = sorted(set(references) - set(predictions))[:5]
        raise ValueError(f"prediction and reference IDs differ (only predicted: {only_p}; only referenced: {only_r})")
    if not predictions:
        raise ValueError("no predictions to score")
    for k, refs in references.items():
        if not refs:
            raise ValueError(f"item {k!r} has no reference caption")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    ids = sorted(predictions)
    gts = _tokenize({k: list(references[k]) for k in ids}, tokenizer)
    res = _tokenize({k: [predictions[k]] for k in ids}, tokenizer)
    # pycocoevalcap's BLEU/ROUGE fail on an empty hypothesis: score it as a single out-of-vocabulary token
    res = {k: [v[0] if v[0].strip() else "<empty>"] for k, v in res.items()}
    out: dict[str, Any] = {name: None for name in METRIC_NAMES}
    out.update(n=len(ids), tokenizer=tokenizer, skipped={})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for i, b in enumerate(bleu):
        out[f"BLEU_{i + 1}"] = float(b)
    out["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    cider, per = Cider().compute_score(gts, res)
    out["CIDEr_D"] = float(cider)
    out["per_item_CIDEr_D"] = {k: float(s) for k, s in zip(ids, per)}
    if not meteor:
        out["skipped"]["METEOR"] = "disabled"
    elif not java_available():
        out["skipped"]["METEOR"] = "Java not found (apt-get install -y default-jre-headless)"
    else:
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()
        try:
            out["METEOR"] = float(scorer.compute_score(gts, res)[0])
        finally:
            try:
                scorer.meteor_p.kill()
                scorer.meteor_p.wait(timeout=10)
            except Exception:  # already gone
                pass
    if spice_corenlp_dir is None:
        reason = "needs the Stanford CoreNLP 3.6.0 jars: pass their folder (spice_corenlp_dir / --spice_corenlp_dir)"
        out["skipped"]["SPICE"] = out["skipped"]["SPIDEr"] = reason
    elif not java_available():
        out["skipped"]["SPICE"] = out["skipped"]["SPIDEr"] = "Java not found"
    else:
        d = Path(spice_corenlp_dir)
        if not any(d.glob("stanford-corenlp-*.jar")):
            out["skipped"]["SPICE"] = out["skipped"]["SPIDEr"] = f"no stanford-corenlp-*.jar in {d}"
        else:
            try:
                out["SPICE"] = _spice(gts, res, d)[0]
                out["SPIDEr"] = (out["CIDEr_D"] + out["SPICE"]) / 2
            except (subprocess.SubprocessError, OSError, ValueError, KeyError) as err:
                out["skipped"]["SPICE"] = out["skipped"]["SPIDEr"] = f"SPICE failed: {err}"
    for name, why in out["skipped"].items():
        logger.debug("%s skipped: %s", name, why)
    return out
