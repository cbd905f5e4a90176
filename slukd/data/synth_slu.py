"""The built-in SLU speech corpus: SLURP's jsonl schema + 16 kHz FLAC spoken by espeak-ng (``slukd synth slu``).

Layout (SLURP's, so :func:`slukd.data.slurp.prepare_slurp` reads it)::

    OUT/dataset/slurp/{train,devel,test}.jsonl
    OUT/slurp_real/synth-<split>-<slurp_id>-<k>.flac
    OUT/corpus.json                        marker: tier, seed, version, config hash, counts (written last)

Sentences come from :mod:`slukd.data.slu_vocab` (every SLURP scenario, intent and most entity types). For each
intent, distinct sentences are drawn (template x slot values x opening/closing); test sentences are drawn first,
then devel, then train, so the three splits never share a sentence (held-out = new combinations).

Tiers (see :data:`TIERS`): ``tiny`` for tests; ``demo`` (default) built for learnability on a 2-core CPU: two short
core templates per intent with their own cue words, 4 values per slot, three short openings/closings, one voice
(en-us) at a brisk 190-220 words per minute with mild pitch jitter (mean utterance 1.5 s), 2 recordings per
train/test sentence (about 1,100 train sentences, 300 test sentences over the 60 intents); ``full``: all
templates and values, polite openings/closings, 8 voices x 13 variants, wide rate/pitch ranges, 3 recordings
per train sentence, additive noise at 5-30 dB SNR on half the recordings.

Every utterance's voice, rate, pitch and noise come from a generator seeded by (seed, split, slurp_id, k), so the
corpus is identical for a seed whatever the number of worker processes. Reruns reuse a complete corpus with the
same configuration, complete a partial one and regenerate one of another configuration.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from slukd.data import slu_vocab as V
from slukd.data.slurp import SlurpFormatError, load_line
from slukd.data.target import SLURP_SCENARIO_ACTIONS, split_intent
from slukd.utils.io import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

CORPUS_VERSION = 1
MARKER = "corpus.json"
PLAN = "corpus_plan.json"
SPLIT_NAMES = ("train", "devel", "test")


@dataclass(frozen=True)
class TierConfig:
    """What a tier generates. Counts are sentences per intent; ``recs`` recordings per sentence per split."""

    n_train: int
    n_devel: int
    n_test: int
    recs_train: int
    recs_devel: int
    recs_test: int
    templates: int | None  # first N templates per intent (None: all)
    values: int | None  # first N values per slot list (None: all)
    openings: tuple[str, ...]
    closings: tuple[str, ...]
    voices: tuple[str, ...]
    variants: tuple[str, ...]
    rate: tuple[int, int]
    pitch: tuple[int, int]
    noise_prob: float = 0.0
    snr_db: tuple[float, float] = (5.0, 30.0)


TIERS: dict[str, TierConfig] = {
    "tiny": TierConfig(
        2, 1, 1, 1, 1, 1, 1, 3, ("", "please", "hey"), ("", "now"), ("en-us",), ("",), (175, 175), (50, 50)
    ),
    "demo": TierConfig(
        20,
        3,
        5,
        2,
        1,
        2,
        V.DEMO_TEMPLATES,
        V.DEMO_VALUES,
        ("", "please", "hey"),
        ("", "please", "now"),
        ("en-us",),
        ("",),
        (190, 220),
        (45, 55),
    ),
    "full": TierConfig(
        100,
        10,
        20,
        3,
        2,
        2,
        None,
        None,
        tuple(V.OPENINGS),
        tuple(V.CLOSINGS),
        ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc"),
        ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5"),
        (120, 220),
        (25, 75),
        noise_prob=0.5,
    ),
}


class CorpusError(RuntimeError):
    """The output folder holds something that is not this corpus (or another configuration of it)."""


def _stable_seed(*parts) -> int:
    return zlib.crc32("|".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


# ------------------------------------------------------------------------------------------------ sentences
def _placeholders(template: str) -> list[str]:
    return [w[1:-1] for w in template.split() if w.startswith("{") and w.endswith("}")]


def _fill(template: str, opening: str, closing: str, rng: random.Random, values: int | None) -> tuple[list, list]:
    """-> (tokens, entities [{"span", "type"}]); one placeholder type used twice gets two different values."""
    words: list[str] = opening.split()
    entities = []
    used: dict[str, set] = {}
    for w in template.split():
        if w.startswith("{") and w.endswith("}"):
            name = w[1:-1]
            pool = V.SLOT_VALUES[name][:values] if values else V.SLOT_VALUES[name]
            choices = [v for v in pool if v not in used.get(name, set())] or pool
            val = rng.choice(choices)
            used.setdefault(name, set()).add(val)
            etype = V.PLACEHOLDER_TYPES.get(name, name)
            start = len(words)
            words.extend(val.split())
            if etype is not None:
                entities.append({"span": list(range(start, len(words))), "type": etype})
        else:
            words.append(w)
    words.extend(closing.split())
    return words, entities


def make_sentences(tier: str, seed: int, scenarios: list[str] | None = None) -> dict[str, list[dict]]:
    """The tier's sentences as SLURP jsonl records without recordings: {split: [record, ...]}.

    Per intent: distinct sentences drawn with a generator seeded by (seed, intent); test first, then devel, then
    train (fewer when the templates allow fewer distinct sentences: logged).
    """
    cfg = TIERS[tier]
    out: dict[str, list[dict]] = {s: [] for s in SPLIT_NAMES}
    wanted = [s for s in SLURP_SCENARIO_ACTIONS if scenarios is None or s in scenarios]
    if scenarios is not None:
        unknown = sorted(set(scenarios) - set(SLURP_SCENARIO_ACTIONS))
        if unknown:
            raise ValueError(f"unknown scenarios: {unknown}")
    next_id = {"test": 1_000_000, "devel": 2_000_000, "train": 3_000_000}
    for intent in sorted(V.TEMPLATES):
        scenario, action = split_intent(intent)
        if scenario not in wanted:
            continue
        templates = V.TEMPLATES[intent][: cfg.templates] if cfg.templates else V.TEMPLATES[intent]
        rng = random.Random(_stable_seed(seed, tier, intent))
        need = {"test": cfg.n_test, "devel": cfg.n_devel, "train": cfg.n_train}
        seen: set[str] = set()
        misses = 0
        for split in ("test", "devel", "train"):
            got = 0
            while got < need[split] and misses < 400:
                tpl = templates[(got + len(seen)) % len(templates)] if rng.random() < 0.5 else rng.choice(templates)
                tokens, entities = _fill(tpl, rng.choice(cfg.openings), rng.choice(cfg.closings), rng, cfg.values)
                sentence = " ".join(tokens)
                if sentence in seen:
                    misses += 1
                    continue
                seen.add(sentence)
                got += 1
                sid = next_id[split]
                next_id[split] += 1
                out[split].append(_record(sid, scenario, action, tokens, entities))
            if got < need[split]:
                logger.info("%s: only %d distinct %s sentences (wanted %d)", intent, got, split, need[split])
    return out


def _record(sid: int, scenario: str, action: str, tokens: list[str], entities: list[dict]) -> dict:
    ann = []
    starts = {e["span"][0]: e for e in entities}
    i = 0
    while i < len(tokens):
        if i in starts:
            e = starts[i]
            ann.append(f"[{e['type']} : {' '.join(tokens[j] for j in e['span'])}]")
            i = e["span"][-1] + 1
        else:
            ann.append(tokens[i])
            i += 1
    return {
        "slurp_id": sid,
        "sentence": " ".join(tokens),
        "sentence_annotation": " ".join(ann),
        "intent": f"{scenario}_{action}",
        "action": action,
        "tokens": [{"surface": t, "id": k, "lemma": t, "pos": "X"} for k, t in enumerate(tokens)],
        "scenario": scenario,
        "recordings": [],
        "entities": entities,
    }


# ------------------------------------------------------------------------------------------------ audio jobs
@dataclass(frozen=True)
class SpeechJob:
    """One recording to make: text, speaker settings, optional noise, output path."""

    path: str
    text: str
    voice: str
    variant: str
    rate: int
    pitch: int
    snr_db: float | None
    noise_seed: int


def _speaker(cfg: TierConfig, seed: int, split: str, sid, k: int) -> tuple[str, str, int, int, float | None, int]:
    rng = random.Random(_stable_seed(seed, "voice", split, sid, k))
    voice = rng.choice(cfg.voices)
    variant = rng.choice(cfg.variants)
    rate = rng.randint(*cfg.rate)
    pitch = rng.randint(*cfg.pitch)
    snr = rng.uniform(*cfg.snr_db) if rng.random() < cfg.noise_prob else None
    return voice, variant, rate, pitch, snr, rng.randrange(2**31)


def add_noise(x: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """Add white or brown noise at ``snr_db`` (signal power over noise power), deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    n = rng.standard_normal(x.shape[0])
    if rng.random() < 0.5:  # brown noise: integrated white noise, high-passed by removing the trend
        n = np.cumsum(n)
        n -= np.linspace(n[0], n[-1], n.shape[0])
    p_sig = float(np.mean(x.astype(np.float64) ** 2)) + 1e-12
    p_noise = float(np.mean(n**2)) + 1e-12
    y = x + n * np.sqrt(p_sig / (p_noise * 10 ** (snr_db / 10.0)))
    peak = float(np.abs(y).max())
    if peak > 0.99:
        y = y * (0.99 / peak)
    return y.astype(np.float32)


def _run_jobs(jobs: list[SpeechJob]) -> float:
    """Synthesise and write the jobs (in a worker); returns seconds of audio written."""
    import soundfile as sf

    from slukd.data.tts import speak

    total = 0.0
    for j in jobs:
        x = speak(j.text, voice=j.voice, rate=j.rate, pitch=j.pitch, variant=j.variant)
        if j.snr_db is not None:
            x = add_noise(x, j.snr_db, j.noise_seed)
        tmp = j.path + ".tmp.flac"
        sf.write(tmp, x, 16000, subtype="PCM_16", format="FLAC")
        os.replace(tmp, j.path)
        total += x.shape[0] / 16000.0
    return total


def _synthesise(jobs: list[SpeechJob], num_workers: int, progress: bool = True) -> float:
    """Run the jobs (in chunks over ``num_workers`` spawned processes); a tqdm bar over recordings when
    ``progress`` and stderr is a terminal. Returns seconds of audio written."""
    if not jobs:
        return 0.0
    total = 0.0
    with tqdm(total=len(jobs), desc="synth slu", unit="rec", disable=None if progress else True) as bar:
        if num_workers <= 1 or len(jobs) < 8:
            for j in jobs:
                total += _run_jobs([j])
                bar.update(1)
            return total
        chunk = max(4, min(64, len(jobs) // (num_workers * 4) or 1))
        chunks = [jobs[i : i + chunk] for i in range(0, len(jobs), chunk)]
        with ProcessPoolExecutor(max_workers=num_workers, mp_context=get_context("spawn")) as ex:
            for part, sec in zip(chunks, ex.map(_run_jobs, chunks)):
                total += sec
                bar.update(len(part))
    return total


# ------------------------------------------------------------------------------------------------ corpus
def _config(tier: str, seed: int, scenarios, from_slurp_jsonl) -> dict:
    src = []
    for p in from_slurp_jsonl or []:
        data = Path(p).read_bytes()
        src.append({"name": Path(p).name, "sha256": hashlib.sha256(data).hexdigest()})
    return {
        "version": CORPUS_VERSION,
        "tier": tier,
        "seed": seed,
        "scenarios": sorted(scenarios) if scenarios else None,
        "tier_config": asdict(TIERS[tier]),
        "templates_sha": hashlib.sha256(json.dumps([V.TEMPLATES, V.SLOT_VALUES], sort_keys=True).encode()).hexdigest(),
        "from_slurp_jsonl": src or None,
    }


def _config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _slurp_sentences(paths: list[str]) -> dict[str, list[dict]]:
    """SLURP-TTS: real SLURP records (recordings dropped), split named by the file stem. Each line is checked as
    :func:`slukd.data.slurp.prepare_slurp` will check it (:func:`slukd.data.slurp.load_line`); a bad line raises
    :class:`slukd.data.slurp.SlurpFormatError` naming ``file:line``."""
    out: dict[str, list[dict]] = {}
    for p in paths:
        p = Path(p)
        split = p.stem
        if split not in ("train", "train_synthetic", "devel", "test"):
            raise ValueError(f"{p}: the file name must be <split>.jsonl with split train/devel/test")
        if split == "train_synthetic":
            split = "train"
        recs = out.setdefault(split, [])
        with open(p, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                d, sent = load_line(raw, f"{p}:{lineno}", require_recordings=False)
                if not sent["transcript"]:
                    raise SlurpFormatError(f"{p}:{lineno}: empty sentence (nothing to speak)")
                d = dict(d)
                d["recordings"] = []
                recs.append(d)
    return out


def synthesize_slu_corpus(
    out_dir: str | os.PathLike,
    tier: str = "demo",
    seed: int = 0,
    num_workers: int = 2,
    from_slurp_jsonl: list[str] | str | None = None,
    scenarios: list[str] | None = None,
    progress: bool = True,
    replace: bool = True,
) -> Path:
    """Generate (or reuse) the corpus in ``out_dir``; returns ``out_dir``.

    ``from_slurp_jsonl``: speak these SLURP jsonl files' sentences instead of the templates (SLURP-TTS; the split
    is the file stem). ``scenarios``: restrict to these scenarios (tests). A complete corpus with the same
    configuration is reused; a partial one is completed; this tool's corpus of another configuration is deleted
    and regenerated. SLURP-layout data not made by this tool raises :class:`CorpusError`. ``progress``: a tqdm
    bar over the recordings to make (shown only when stderr is a terminal); the audio does not depend on it.
    ``replace=False`` (what a training run passes): a corpus of another configuration is never deleted; a
    :class:`CorpusError` names the setting that differs (``--tier``, ``--corpus_seed``) instead.
    """
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; choose one of {sorted(TIERS)}")
    if isinstance(from_slurp_jsonl, (str, os.PathLike)):
        from_slurp_jsonl = [str(from_slurp_jsonl)]
    out = Path(out_dir)
    cfg = TIERS[tier]
    config = _config(tier, seed, scenarios, from_slurp_jsonl)
    chash = _config_hash(config)
    marker, plan = out / MARKER, out / PLAN
    if marker.is_file():
        old = json.loads(marker.read_text())
        if old.get("config_hash") == chash and _complete(out):
            logger.info("SLU corpus in %s is complete (tier %s, seed %d): reusing it", out, tier, seed)
            return out
    ours = marker.is_file() or plan.is_file()
    if not ours and ((out / "dataset").exists() or (out / "slurp_real").exists()):
        raise CorpusError(f"{out} already holds SLURP-layout data that this tool did not make")
    for existing in (marker, plan):
        if existing.is_file() and json.loads(existing.read_text()).get("config_hash") != chash:
            if not replace:
                raise CorpusError(corpus_mismatch(out, json.loads(existing.read_text()).get("config", {}), config))
            logger.warning("%s holds this tool's corpus of another configuration: regenerating it", out)
            _remove_corpus(out)
            break
    t0 = time.perf_counter()
    (out / "dataset" / "slurp").mkdir(parents=True, exist_ok=True)
    (out / "slurp_real").mkdir(parents=True, exist_ok=True)
    atomic_write_json(plan, {"config_hash": chash, "config": config})
    sentences = _slurp_sentences(from_slurp_jsonl) if from_slurp_jsonl else make_sentences(tier, seed, scenarios)
    jobs: list[SpeechJob] = []
    counts = {}
    for split, recs in sentences.items():
        n_rec = {"train": cfg.recs_train, "devel": cfg.recs_devel, "test": cfg.recs_test}[split]
        lines = []
        for r in recs:
            for k in range(n_rec):
                fname = f"synth-{split}-{r['slurp_id']}-{k}.flac"
                voice, variant, rate, pitch, snr, nseed = _speaker(cfg, seed, split, r["slurp_id"], k)
                r["recordings"].append(
                    {
                        "file": fname,
                        "wer": 0.0,
                        "ent_wer": 0.0,
                        "status": "correct",
                        "voice": f"{voice}+{variant}" if variant else voice,
                        "rate": rate,
                        "pitch": pitch,
                        "snr_db": None if snr is None else round(snr, 2),
                    }
                )
                path = out / "slurp_real" / fname
                if not path.is_file():
                    jobs.append(SpeechJob(str(path), r["sentence"], voice, variant, rate, pitch, snr, nseed))
            lines.append(json.dumps(r, ensure_ascii=False))
        atomic_write_text(out / "dataset" / "slurp" / f"{split}.jsonl", "".join(line + "\n" for line in lines))
        counts[split] = {"sentences": len(recs), "recordings": len(recs) * n_rec}
    logger.info("synthesising %d recordings with %d worker(s) into %s", len(jobs), num_workers, out)
    t1 = time.perf_counter()
    audio_s = _synthesise(jobs, num_workers, progress)
    wall = time.perf_counter() - t1
    if jobs:
        logger.info("%.0f s of speech in %.1f s (%.0f s of speech per wall second)", audio_s, wall, audio_s / wall)
    atomic_write_json(
        marker,
        {
            "config_hash": chash,
            "config": config,
            "counts": counts,
            "seconds": round(time.perf_counter() - t0, 2),
            "synthesised_now": len(jobs),
        },
    )
    return out


def corpus_mismatch(out: Path, old: dict, new: dict) -> str:
    """The one-line reason a training run may not use (or rebuild) the built-in corpus in ``out``."""
    diffs = []
    if old.get("tier") != new.get("tier"):
        diffs.append(f"tier {old.get('tier')} (this run asks for {new.get('tier')}: --tier)")
    if old.get("seed") != new.get("seed"):
        diffs.append(f"seed {old.get('seed')} (this run asks for {new.get('seed')}: --corpus_seed)")
    if not diffs:
        diffs.append("another version or subset of the built-in corpus")
    return (
        f"{out} holds the built-in corpus of {', '.join(diffs)}; a training run never deletes or rebuilds a corpus: "
        f"pass the folder's settings, use another --data_folder, or rebuild it with slukd synth slu --out {out}"
    )


def check_corpus(out_dir: str | os.PathLike, tier: str, seed: int) -> None:
    """Raise :class:`CorpusError` when ``out_dir`` holds (part of) the built-in corpus of another tier or seed
    (nothing is read but its marker files; a missing corpus is fine: it will be made)."""
    out = Path(out_dir)
    if tier not in TIERS:
        raise CorpusError(f"unknown tier {tier!r}; choose one of {sorted(TIERS)}")
    for name in (MARKER, PLAN):
        path = out / name
        if path.is_file():
            try:
                old = json.loads(path.read_text(encoding="utf-8")).get("config", {})
            except (json.JSONDecodeError, OSError) as err:
                raise CorpusError(f"{path}: unreadable corpus marker ({err})") from None
            if old.get("tier") != tier or old.get("seed") != seed:
                raise CorpusError(corpus_mismatch(out, old, {"tier": tier, "seed": seed}))
            return
    if (out / "dataset").exists() or (out / "slurp_real").exists():
        raise CorpusError(f"{out} already holds SLURP-layout data that slukd did not make: use --corpus slurp")


def _complete(out: Path) -> bool:
    for split in SPLIT_NAMES:
        p = out / "dataset" / "slurp" / f"{split}.jsonl"
        if not p.is_file():
            continue
        with open(p, encoding="utf-8") as f:
            for line in f:
                for r in json.loads(line)["recordings"]:
                    if not (out / "slurp_real" / r["file"]).is_file():
                        return False
    return True


def _remove_corpus(out: Path) -> None:
    logger.warning("removing the old corpus in %s", out)
    for split in SPLIT_NAMES:
        (out / "dataset" / "slurp" / f"{split}.jsonl").unlink(missing_ok=True)
    audio = out / "slurp_real"
    if audio.is_dir():
        for f in audio.glob("synth-*.flac"):
            f.unlink()
    for name in (MARKER, PLAN):
        (out / name).unlink(missing_ok=True)
    if audio.is_dir() and not any(audio.iterdir()):
        shutil.rmtree(audio)


def cli_main(argv: list[str], prog: str = "slukd synth slu") -> int:
    """``slukd synth slu --out DIR [--tier tiny|demo|full] [--seed N] [--jobs N] [--from_slurp_jsonl F ...]
    [--noprogressbar]``."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                epilog="example: slukd synth slu --out data/slu_tiny --tier tiny")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder (SLURP layout)")
    p.add_argument("--tier", default="demo", choices=sorted(TIERS), help="corpus size (the recipes' --tier)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed (the recipes' --corpus_seed)")
    p.add_argument("--jobs", "--workers", dest="workers", type=int, default=2, help="synthesis processes")
    p.add_argument(
        "--from_slurp_jsonl",
        "--from-slurp-jsonl",
        action="extend",
        nargs="+",
        default=None,
        metavar="FILE",
        help="speak the sentences of these SLURP jsonl files (train/devel/test.jsonl) instead of the templates",
    )
    p.add_argument("--scenarios", default=None, help="comma-separated subset of scenarios")
    p.add_argument("--noprogressbar", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    try:
        synthesize_slu_corpus(
            a.out,
            tier=a.tier,
            seed=a.seed,
            num_workers=a.workers,
            from_slurp_jsonl=a.from_slurp_jsonl,
            scenarios=a.scenarios.split(",") if a.scenarios else None,
            progress=not a.noprogressbar,
        )
    except (CorpusError, SlurpFormatError, ValueError, FileNotFoundError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    counts = json.loads((Path(a.out) / MARKER).read_text())["counts"]
    parts = [f"{k} " + (" / ".join(f"{n} {what}" for what, n in v.items()) if isinstance(v, dict) else str(v))
             for k, v in counts.items()]  # fmt: skip
    print(f"{prog}: {a.out}: " + ", ".join(parts))
    return 0
