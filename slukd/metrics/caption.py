"""Caption metrics over a whole split (corpus level, never averaged per batch).

Backends (``backend=``, recorded as ``metrics["backend"]``):

* ``"pycocoevalcap"`` (default): BLEU-1..4, ROUGE-L and CIDEr-D are pure Python (pycocoevalcap's ``Cider`` is CIDEr-D:
  clipped n-gram counts, Gaussian length penalty sigma 6, x10). METEOR 1.5 runs when Java is present. SPICE (and
  SPIDEr = (CIDEr-D + SPICE) / 2) runs only when the user supplies a folder holding the Stanford CoreNLP 3.6.0 jars
  (no download ever happens). FENSE is not available.
* ``"aac-metrics"``: same BLEU / ROUGE-L / CIDEr-D / METEOR as above, while SPICE, SPIDEr and FENSE come from the
  aac-metrics package (0.5.5), which must be installed with its files already on disk:

  - SPICE / SPIDEr need either a filled aac-metrics cache (``aac_cache_dir``, the layout of ``aac-metrics-download``:
    ``aac-metrics/spice/spice-1.0.jar``, ``aac-metrics/spice/lib/*.jar``) or ``spice_corenlp_dir`` holding
    ``stanford-corenlp-3.6.0.jar`` and ``stanford-corenlp-3.6.0-models.jar``, from which a cache is assembled in a
    temporary folder out of pycocoevalcap's own SPICE jars. aac-metrics refuses Java > 13; its limit
    (``aac_metrics.utils.checks.MAX_JAVA_MAJOR_VERSION``) is raised to the installed Java for the call only.
  - FENSE = mean_i sim_i * (1 - 0.9 * [P(error_i) > 0.9]) needs ``fense_dir`` holding
    ``echecker_clotho_audiocaps_base.ckpt``, the Sentence-BERT folder ``paraphrase-TinyBERT-L6-v2/`` and the
    echecker's encoder folder named by the checkpoint's ``model_type`` (``bert-base-uncased/``). Only these local
    paths are loaded; nothing is downloaded.

  Anything missing (package, Java, files) skips the metric with the reason in ``metrics["skipped"]``; it never raises.

Tokenisation (``tokenizer=``, recorded as ``metrics["tokenizer"]``), applied to predictions and references before
every metric: ``"simple"`` (default) is :func:`slukd.data.captions.normalize_caption` (lowercase, punctuation
removed), pure Python and deterministic; ``"ptb"`` is pycocoevalcap's Stanford PTB tokenizer (Java), the one behind
published COCO / DCASE numbers.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from slukd.data.captions import normalize_caption

logger = logging.getLogger(__name__)

METRIC_NAMES = ["BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr_D", "SPICE", "SPIDEr", "FENSE"]
TOKENIZERS = ("simple", "ptb")
BACKENDS = ("pycocoevalcap", "aac-metrics")
JAVA_INSTALL = "apt-get install -y default-jre-headless"
AAC_METRICS_INSTALL = "pip install aac-metrics==0.5.5"
CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
FENSE_ECHECKER = "echecker_clotho_audiocaps_base.ckpt"
FENSE_SBERT = "paraphrase-TinyBERT-L6-v2"
SPICE_TIMEOUT_S = 3600


def java_available() -> bool:
    """Whether a ``java`` program is on the PATH (METEOR and the PTB tokenizer need it)."""
    return shutil.which("java") is not None


def java_major_version(java: str = "java") -> int | None:
    """Major version of ``java -version`` (``1.8.0`` -> 8, ``17.0.15`` -> 17); None if Java is absent or unparsable."""
    exe = shutil.which(java)
    if exe is None:
        return None
    try:
        text = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=60).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if m is None:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def _tokenize(items: dict[str, list[str]], tokenizer: str) -> dict[str, list[str]]:
    if tokenizer == "simple":
        return {k: [normalize_caption(c) for c in v] for k, v in items.items()}
    if tokenizer == "ptb":
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        # the PTB tokenizer reads one caption per line: a newline inside a caption would shift every later caption
        clean = {k: [{"caption": " ".join(c.split())} for c in v] for k, v in items.items()}
        return PTBTokenizer().tokenize(clean)
    raise ValueError(f"unknown tokenizer {tokenizer!r} (use one of {TOKENIZERS})")


def _spice(gts: dict[str, list[str]], res: dict[str, list[str]], corenlp_dir: Path) -> tuple[float, dict[str, float]]:
    """SPICE with pycocoevalcap's spice-1.0.jar and the user's CoreNLP jars on the class path (no download)."""
    spice_dir = _pycoco_spice_dir()
    jars = sorted(str(p) for p in corenlp_dir.glob("*.jar"))
    classpath = os.pathsep.join([str(spice_dir / "spice-1.0.jar"), str(spice_dir / "lib" / "*")] + jars)
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.json", Path(tmp) / "out.json"
        data = [{"image_id": k, "test": res[k][0], "refs": gts[k]} for k in sorted(gts)]
        inp.write_text(json.dumps(data), encoding="utf-8")
        cmd = ["java", "-Xmx8G", "-cp", classpath, "edu.anu.spice.SpiceScorer", str(inp)]
        cmd += ["-out", str(out), "-subset", "-silent", "-cache", str(Path(tmp) / "cache")]
        subprocess.run(cmd, check=True, capture_output=True, timeout=SPICE_TIMEOUT_S)
        results = json.loads(out.read_text(encoding="utf-8"))
    per = {r["image_id"]: float(r["scores"]["All"]["f"]) for r in results}
    return sum(per.values()) / max(1, len(per)), per


def _pycoco_spice(
    gts: dict[str, list[str]],
    res: dict[str, list[str]],
    out: dict[str, Any],
    spice_corenlp_dir: str | os.PathLike | None,
) -> None:
    """SPICE / SPIDEr of the pycocoevalcap backend into ``out``, or the reason they are skipped."""
    if spice_corenlp_dir is None:
        reason = "needs the Stanford CoreNLP 3.6.0 jars: pass their folder with --metric_options.spice_corenlp_dir=DIR"
        out["skipped"]["SPICE"] = out["skipped"]["SPIDEr"] = reason
    elif not java_available():
        out["skipped"]["SPICE"] = out["skipped"]["SPIDEr"] = f"Java not found ({JAVA_INSTALL})"
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


def _pycoco_spice_dir() -> Path:
    import pycocoevalcap.spice as spice_pkg

    return Path(spice_pkg.__file__).parent


def _missing_aac_spice_files(cache: Path) -> list[str]:
    """Files of the aac-metrics SPICE layout that are absent under ``cache`` (relative paths)."""
    spice = Path("aac-metrics") / "spice"
    needed = [spice / "spice-1.0.jar"] + [spice / "lib" / j for j in CORENLP_JARS]
    return [str(p) for p in needed if not (cache / p).is_file()]


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _build_aac_cache(corenlp_dir: Path, root: Path) -> Path:
    """aac-metrics cache layout under ``root`` from pycocoevalcap's SPICE jars + the user's CoreNLP 3.6.0 jars.

    ``root/aac-metrics/spice/{spice-1.0.jar, lib/*.jar, cache/}``; the SPICE jar is linked or copied (its manifest
    class path is resolved next to it), the libraries are symbolic links.
    """
    src = _pycoco_spice_dir()
    spice = root / "aac-metrics" / "spice"
    (spice / "lib").mkdir(parents=True)
    (spice / "cache").mkdir()
    _link_or_copy(src / "spice-1.0.jar", spice / "spice-1.0.jar")
    for jar in sorted((src / "lib").glob("*.jar")) + [corenlp_dir / j for j in CORENLP_JARS]:
        (spice / "lib" / jar.name).symlink_to(jar.resolve())
    return root


def _aac_spider(
    cands: list[str], mrefs: list[list[str]], cache: Path, tmp: Path
) -> tuple[float, float, list[float], list[float]]:
    """(SPICE, SPIDEr, per-item SPICE, per-item SPIDEr) from ``aac_metrics.functional.spider.spider``."""
    from aac_metrics.functional.spider import spider
    from aac_metrics.utils import checks

    old_max = checks.MAX_JAVA_MAJOR_VERSION
    major = java_major_version()
    if major is not None and major > old_max:
        checks.MAX_JAVA_MAJOR_VERSION = major
    try:
        corpus, sents = spider(
            cands,
            mrefs,
            return_all_scores=True,
            cache_path=str(cache),
            java_path=shutil.which("java"),
            tmp_path=str(tmp),
            timeout=SPICE_TIMEOUT_S,
        )
    finally:
        checks.MAX_JAVA_MAJOR_VERSION = old_max
    return (
        float(corpus["spice"]),
        float(corpus["spider"]),
        [float(x) for x in sents["spice"]],
        [float(x) for x in sents["spider"]],
    )


def _fense_missing(fense_dir: Path) -> str | None:
    if not fense_dir.is_dir():
        return f"fense_dir {fense_dir} is not a folder"
    if not (fense_dir / FENSE_ECHECKER).is_file():
        return f"no {FENSE_ECHECKER} in {fense_dir}"
    if not (fense_dir / FENSE_SBERT / "config.json").is_file():
        return f"no Sentence-BERT folder {fense_dir / FENSE_SBERT} (with config.json)"
    return None


def _aac_fense(cands: list[str], mrefs: list[list[str]], fense_dir: Path, device: str) -> tuple[float, list[float]]:
    """(FENSE, per-item FENSE) through ``aac_metrics.functional.fense.fense`` with models loaded from local folders."""
    import torch
    from aac_metrics.functional.fense import fense
    from aac_metrics.functional.fer import BERTFlatClassifier
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    ckpt_path = fense_dir / FENSE_ECHECKER
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    for field in ("model_type", "num_classes", "state_dict"):
        if not isinstance(ckpt, dict) or field not in ckpt:
            raise ValueError(f"{ckpt_path}: missing field {field!r}")
    encoder_dir = fense_dir / str(ckpt["model_type"])
    if not (encoder_dir / "config.json").is_file():
        raise FileNotFoundError(f"no echecker encoder folder {encoder_dir} (with config.json)")
    # A local folder path never reaches the model hub (a bare model name would).
    echecker = BERTFlatClassifier(model_type=str(encoder_dir), num_classes=int(ckpt["num_classes"]))
    state = dict(ckpt["state_dict"])
    expected = echecker.state_dict()
    for key in [k for k in state if k.endswith("position_ids") and k not in expected]:
        state.pop(key)  # transformers >= 4.31 no longer keeps this buffer in the state dict
    echecker.load_state_dict(state)
    echecker = echecker.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
    sbert = SentenceTransformer(str(fense_dir / FENSE_SBERT), device=device)
    corpus, sents = fense(
        cands,
        mrefs,
        return_all_scores=True,
        sbert_model=sbert,
        echecker=echecker,
        echecker_tokenizer=tokenizer,
        device=device,
    )
    return float(corpus["fense"]), [float(x) for x in sents["fense"]]


def _aac_metrics_scores(
    ids: list[str],
    gts: dict[str, list[str]],
    res: dict[str, list[str]],
    out: dict[str, Any],
    spice_corenlp_dir: str | os.PathLike | None,
    aac_cache_dir: str | os.PathLike | None,
    fense_dir: str | os.PathLike | None,
    device: str,
) -> None:
    """Fill SPICE / SPIDEr / FENSE of ``out`` through aac-metrics, or record why each is skipped."""
    skipped = out["skipped"]
    try:
        import aac_metrics  # noqa: F401
    except Exception as err:  # not installed, or an install that fails on import: skip, never crash
        out["backend"] = "pycocoevalcap"
        if isinstance(err, ModuleNotFoundError) and err.name == "aac_metrics":
            reason = f"backend 'aac-metrics' requested but the package is not installed ({AAC_METRICS_INSTALL})"
        else:
            reason = f"backend 'aac-metrics' requested but it fails to import: {type(err).__name__}: {err}"
        for name in ("SPICE", "SPIDEr", "FENSE"):
            skipped[name] = reason
        return
    out["backend"] = "aac-metrics"
    cands = [res[k][0] for k in ids]
    mrefs = [list(gts[k]) for k in ids]

    with tempfile.TemporaryDirectory(prefix="slukd_aac_") as tmp_name:
        tmp = Path(tmp_name)
        reason: str | None = None
        cache: Path | None = None
        if not java_available():
            reason = f"Java not found ({JAVA_INSTALL})"
        elif aac_cache_dir is not None:
            cache = Path(aac_cache_dir)
            missing = _missing_aac_spice_files(cache)
            if missing:
                reason = (
                    f"aac-metrics cache {cache} lacks {', '.join(missing)} (fill it with `aac-metrics-download "
                    f"--cache_path {cache}` where there is network, or pass spice_corenlp_dir instead)"
                )
        elif spice_corenlp_dir is not None:
            corenlp = Path(spice_corenlp_dir)
            missing = [j for j in CORENLP_JARS if not (corenlp / j).is_file()]
            if missing:
                reason = f"no {', '.join(missing)} in {corenlp} (SPICE needs the Stanford CoreNLP 3.6.0 jars)"
            else:
                cache = _build_aac_cache(corenlp, tmp / "cache")
        else:
            reason = "needs the Stanford CoreNLP 3.6.0 jars (spice_corenlp_dir) or a filled aac-metrics cache"
            reason += " (aac_cache_dir)"
        if reason is None and cache is not None:
            try:
                spice, spider, per_spice, per_spider = _aac_spider(cands, mrefs, cache, tmp)
            except (subprocess.SubprocessError, OSError, RuntimeError, ValueError, KeyError) as err:
                reason = f"aac-metrics SPICE failed: {type(err).__name__}: {err}"
            else:
                out["SPICE"], out["SPIDEr"] = spice, spider
                out["per_item_SPIDEr"] = dict(zip(ids, per_spider))
                out["per_item_SPICE"] = dict(zip(ids, per_spice))
        if reason is not None:
            skipped["SPICE"] = skipped["SPIDEr"] = reason

    if fense_dir is None:
        skipped["FENSE"] = (
            f"needs fense_dir: a folder with {FENSE_ECHECKER}, {FENSE_SBERT}/ and bert-base-uncased/ (never downloaded)"
        )
        return
    reason = _fense_missing(Path(fense_dir))
    if reason is None:
        try:
            fense_score, per_fense = _aac_fense(cands, mrefs, Path(fense_dir), device)
        except (ImportError, OSError, RuntimeError, ValueError, KeyError) as err:
            reason = f"aac-metrics FENSE failed: {type(err).__name__}: {err}"
        else:
            out["FENSE"] = fense_score
            out["per_item_FENSE"] = dict(zip(ids, per_fense))
    if reason is not None:
        skipped["FENSE"] = reason


def caption_metrics(
    predictions: dict[str, str],
    references: dict[str, list[str]],
    tokenizer: str = "simple",
    meteor: bool = True,
    spice_corenlp_dir: str | os.PathLike | None = None,
    backend: str = "pycocoevalcap",
    aac_cache_dir: str | os.PathLike | None = None,
    fense_dir: str | os.PathLike | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Corpus-level caption metrics (see the module docstring for backends, files and tokenisation).

    Args:
        predictions: item ID -> one predicted caption.
        references: item ID -> reference captions (at least one); same IDs as ``predictions``.
        tokenizer: ``"simple"`` or ``"ptb"`` (needs Java: a RuntimeError says what to install when it is missing).
        meteor: compute METEOR when Java is present.
        spice_corenlp_dir: folder with the Stanford CoreNLP 3.6.0 jars; SPICE/SPIDEr are skipped without it
            (with ``backend="aac-metrics"``, ``aac_cache_dir`` may replace it).
        backend: ``"pycocoevalcap"`` or ``"aac-metrics"`` (SPICE, SPIDEr and FENSE through aac-metrics).
        aac_cache_dir: an aac-metrics cache folder (``aac-metrics-download --cache_path``), aac-metrics backend only.
        fense_dir: folder with the FENSE model files, aac-metrics backend only.
        device: torch device for FENSE.

    Returns:
        ``{"BLEU_1".."BLEU_4", "METEOR", "ROUGE_L", "CIDEr_D", "SPICE", "SPIDEr", "FENSE": float | None, "n": int,
        "tokenizer": str, "backend": str, "skipped": {metric: reason}, "per_item_CIDEr_D": {id: float}}``, plus
        ``per_item_SPICE`` / ``per_item_SPIDEr`` / ``per_item_FENSE`` when aac-metrics computed them.
    """
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {tokenizer!r} (use one of {TOKENIZERS})")
    if backend not in BACKENDS:
        raise ValueError(f"unknown caption-metrics backend {backend!r} (use one of {BACKENDS})")
    if tokenizer == "ptb" and not java_available():
        raise RuntimeError(
            f"tokenizer='ptb' runs pycocoevalcap's Stanford PTB tokenizer, which needs Java: install it "
            f"(`{JAVA_INSTALL}`) or use tokenizer='simple'"
        )
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
    out.update(n=len(ids), tokenizer=tokenizer, backend="pycocoevalcap", skipped={})
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
        out["skipped"]["METEOR"] = f"Java not found ({JAVA_INSTALL})"
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
    if backend == "aac-metrics":
        _aac_metrics_scores(ids, gts, res, out, spice_corenlp_dir, aac_cache_dir, fense_dir, device)
    else:
        _pycoco_spice(gts, res, out, spice_corenlp_dir)
        out["skipped"]["FENSE"] = f"needs backend='aac-metrics' ({AAC_METRICS_INSTALL}) and its model files (fense_dir)"
    for name, why in out["skipped"].items():
        logger.debug("%s skipped: %s", name, why)
    return out
