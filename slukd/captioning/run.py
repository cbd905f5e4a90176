"""One captioning row, end to end: data -> vocabulary -> (teacher targets) -> training -> test metrics -> results.

Configuration: a row YAML (``hparams/captioning_kd/<row>.yaml``) names a ``base`` YAML in the same folder and
overrides some of its keys (nested mappings are merged); command-line overrides ``--a.b=value`` come last and must
name existing keys. String values may use ``{tier}``, ``{seed}`` and ``{row}``.

Stages, each resumable (rerunning the same command continues where it stopped):
1. corpus: the built-in scenes corpus is generated into ``data_folder`` on first use (``corpus: scenes``), or a
   user's Clotho / AudioCaps folder is read; manifests go to ``<output_folder>/manifests``;
2. vocabulary: the teacher row builds it from its training captions; student rows reuse the teacher's;
3. teacher targets (student rows with seq/enc KD): beam-3 pseudo-captions and pooled embeddings, cached in
   ``<teacher_folder>/teacher_targets`` once per teacher;
4. training (``<output_folder>/train``: ``ckpt.pt`` per epoch, ``best_model.pt`` by validation CIDEr-D);
5. test: beam search over the whole test split, metrics, predictions, samples, ``results.json`` (written last).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
import yaml

from slukd.captioning.evaluate import decode_rows, evaluate_split, write_outputs
from slukd.captioning.kd import teacher_targets
from slukd.captioning.models import build_model
from slukd.captioning.train import CaptionTrainer, KDSetup
from slukd.data.captions import WordVocab, prepare_audiocaps, prepare_clotho, read_manifest
from slukd.distill import Teacher
from slukd.metrics.caption import caption_metrics
from slukd.models.seq2seq import count_parameters
from slukd.utils.io import atomic_write_json
from slukd.utils.run import record_run, seed_everything

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------------
# configuration


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"hparams file not found: {path}") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ValueError(f"{where}: invalid YAML ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Any]:
    """Row YAML merged over its ``base`` (``--base=FILE`` picks another), then ``--key.sub=value`` overrides.

    Unknown override keys raise KeyError (as SpeechBrain does).
    """
    path = Path(path)
    row = _read_yaml(path)
    args = list(overrides or [])
    for i, a in enumerate(args):  # --base=other_base.yaml swaps the base file (e.g. gpu_base.yaml)
        if a.startswith("--base=") or a == "--base":
            row["base"] = a.split("=", 1)[1] if "=" in a else args[i + 1]
            del args[i : i + (1 if "=" in a else 2)]
            break
    cfg: dict[str, Any] = {}
    if "base" in row:
        cfg = _read_yaml(path.parent / row.pop("base"))
    cfg = _merge(cfg, row)
    cfg.setdefault("row", path.stem)
    i = 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            raise ValueError(f"unexpected argument {a!r}: overrides look like --key=value or --key value")
        if "=" in a:
            key, val = a[2:].split("=", 1)
        else:
            if i + 1 >= len(args):
                raise ValueError(f"override {a} has no value")
            key, val = a[2:], args[i + 1]
            i += 1
        i += 1
        node, parts = cfg, key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise KeyError(f"override --{key}: no section {p!r} in {path}")
            node = node[p]
        if parts[-1] not in node:
            raise KeyError(f"override --{key}: unknown key (not in {path} or its base)")
        node[parts[-1]] = yaml.safe_load(val)
    fill = {"tier": cfg.get("tier", ""), "seed": cfg.get("seed", 0), "row": cfg["row"]}

    def subst(x):
        if isinstance(x, str):
            return x.format(**fill) if "{" in x else x
        if isinstance(x, dict):
            return {k: subst(v) for k, v in x.items()}
        if isinstance(x, list):
            return [subst(v) for v in x]
        return x

    return subst(cfg)


# ----------------------------------------------------------------------------------------------------------------------
# stages


def prepare_data(cfg: dict[str, Any], out: Path) -> dict[str, list[dict[str, Any]]]:
    corpus = cfg["corpus"]
    data = Path(cfg["data_folder"])
    man = out / "manifests"
    kwargs = dict(
        audio_only_folder=cfg.get("audio_only_folder"),
        captioned_fraction=float(cfg.get("captioned_fraction", 1.0)),
        seed=int(cfg.get("corpus_seed", 0)),
    )
    if corpus == "scenes":
        from slukd.data.synth_scenes import generate_scenes

        generate_scenes(data, tier=cfg["tier"], seed=int(cfg.get("corpus_seed", 0)), jobs=int(cfg.get("jobs", 2)))
        paths = prepare_clotho(data, man, **kwargs)
    elif corpus == "clotho":
        paths = prepare_clotho(data, man, **kwargs)
    elif corpus == "audiocaps":
        paths = prepare_audiocaps(data, man, **kwargs)
    else:
        raise ValueError(f"corpus must be scenes, clotho or audiocaps; got {corpus!r}")
    rows = {split: read_manifest(p) for split, p in paths.items()}
    for split in ("train", "valid", "test"):
        if not rows[split]:
            raise ValueError(f"{paths[split]}: no usable clips in the {split} split")
    limit = cfg.get("limit_clips")  # smoke tests: the first N clips of each split
    if limit:
        rows = {k: v[: int(limit)] for k, v in rows.items()}
    return rows


def _teacher_folder(cfg: dict[str, Any]) -> Path:
    return Path(cfg["teacher_folder"])


def load_teacher(cfg: dict[str, Any], device: torch.device) -> tuple[Teacher, WordVocab]:
    folder = _teacher_folder(cfg)
    need = [folder / "results.json", folder / "model_spec.json", folder / "vocab.json", folder / "train/best_model.pt"]
    missing = [str(p) for p in need if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"teacher not found: {missing[0]} is missing. Train the teacher row first "
            f"(python recipes/captioning_kd.py hparams/captioning_kd/teacher.yaml) or set teacher_folder."
        )
    vocab = WordVocab.load(folder / "vocab.json")
    spec = json.loads((folder / "model_spec.json").read_text(encoding="utf-8"))
    model = build_model(spec["model"], vocab.vocab_size)
    model.load_state_dict(torch.load(folder / "train/best_model.pt", map_location="cpu"))
    return Teacher(model, device=device), vocab


def run(cfg: dict[str, Any], resolved_text: str | None = None) -> dict[str, Any]:
    """Run one row (see the module docstring); returns its results (also in ``<output_folder>/results.json``)."""
    out = Path(cfg["output_folder"])
    role = cfg["role"]
    if role not in ("teacher", "student"):
        raise ValueError(f"role must be teacher or student, got {role!r}")
    kd_cfg = dict(cfg.get("kd") or {})
    weights = {k: float(kd_cfg.get(k, 0.0)) for k in ("seq", "enc", "tok")}
    identity = {
        k: cfg.get(k)
        for k in ("row", "role", "seed", "corpus", "tier", "corpus_seed", "captioned_fraction", "audio_only")
    }
    train_id = {k: v for k, v in cfg["train"].items() if k != "log_every"}  # logging does not change results
    identity.update(model=cfg[f"{role}_model"], kd=kd_cfg, train=train_id, limit_clips=cfg.get("limit_clips"))
    record_run(out, resolved_text or yaml.safe_dump(cfg, sort_keys=False), identity)
    if (out / "results.json").is_file():
        logger.info("%s is finished (results.json present)", out)
        return json.loads((out / "results.json").read_text(encoding="utf-8"))
    device = torch.device(cfg.get("device", "cpu"))
    teacher = None
    needs_teacher = role == "student" and any(w > 0 for w in weights.values())
    if needs_teacher:  # fail fast, before any data work
        teacher, vocab = load_teacher(cfg, device)
    seed_everything(int(cfg["seed"]))
    rows = prepare_data(cfg, out)

    if needs_teacher:
        pass
    elif role == "student" and (_teacher_folder(cfg) / "vocab.json").is_file():
        vocab = WordVocab.load(_teacher_folder(cfg) / "vocab.json")
    else:
        v = cfg.get("vocab", {})
        caps = [c for r in rows["train"] for c in r["captions"]]
        vocab = WordVocab.build(caps, min_count=int(v.get("min_count", 1)), max_words=int(v.get("max_words", 20)))
    vocab.save(out / "vocab.json")
    atomic_write_json(out / "model_spec.json", {"model": cfg[f"{role}_model"], "vocab_size": vocab.vocab_size})

    seed_everything(int(cfg["seed"]))
    model = build_model(cfg[f"{role}_model"], vocab.vocab_size)
    n_params = count_parameters(model)
    logger.info("%s: %s model, %.2fM parameters, vocabulary %d", cfg["row"], role, n_params / 1e6, vocab.vocab_size)

    ev = cfg.get("eval", {})
    tr = dict(cfg["train"], seed=int(cfg["seed"]))
    use_ao = bool(cfg.get("audio_only")) and role == "student"
    if use_ao and not rows["audio_only"]:
        raise ValueError("audio_only: true but the corpus has no audio-only clips")
    kd = None
    if role == "student" and any(w > 0 for w in weights.values()):
        labeler = embeddings = None
        if weights["seq"] > 0 or weights["enc"] > 0:
            target_rows = rows["train"] + (rows["audio_only"] if use_ao else [])
            labeler, embeddings = teacher_targets(
                teacher,
                target_rows,
                _teacher_folder(cfg) / "teacher_targets",
                beam_size=int(kd_cfg.get("beam_size", 3)),
                max_len=int(ev.get("max_len", 22)),
                batch_size=int(ev.get("batch_size", 32)),
                bf16=bool(tr.get("bf16", False)),
            )
        kd = KDSetup(
            weights,
            teacher=teacher,
            labeler=labeler,
            embeddings=embeddings,
            enc_kind=kd_cfg.get("enc_kind", "contrastive"),
            student_dim=model.encoder_dim,
            teacher_dim=teacher.module.encoder_dim,
            proj_dim=int(kd_cfg.get("proj_dim", 256)),
            temperature=float(kd_cfg.get("temperature", 0.07)),
            tok_temperature=float(kd_cfg.get("tok_temperature", 2.0)),
        )

    valid_refs = {r["ID"]: r["captions"] for r in rows["valid"]}

    def validate(m) -> float:
        preds = decode_rows(
            m, vocab, rows["valid"], beam_size=int(ev.get("valid_beam", 1)), max_len=int(ev.get("max_len", 22)),
            batch_size=int(ev.get("batch_size", 32)), device=device, bf16=bool(tr.get("bf16", False)),
        )  # fmt: skip
        return caption_metrics(preds, valid_refs, meteor=False)["CIDEr_D"]

    seed_everything(int(cfg["seed"]))
    trainer = CaptionTrainer(model, vocab, out / "train", tr, kd=kd, validate_fn=validate, device=device)
    summary = trainer.fit(rows["train"], rows["audio_only"] if use_ao else None)

    model.load_state_dict(torch.load(out / "train/best_model.pt", map_location=device))
    metrics, preds = evaluate_split(
        model, vocab, rows["test"], beam_size=int(ev.get("beam_size", 3)), batch_size=int(ev.get("batch_size", 32)),
        max_len=int(ev.get("max_len", 22)), device=device, meteor=bool(ev.get("meteor", True)),
        spice_corenlp_dir=ev.get("spice_corenlp_dir"), bf16=bool(tr.get("bf16", False)),
    )  # fmt: skip
    write_outputs(out, "test", metrics, preds, rows["test"], n_samples=int(ev.get("n_samples", 20)))
    for name, why in metrics["skipped"].items():
        logger.info("%s skipped: %s", name, why)
    kd_name = "+".join(
        [k for k in ("seq", "enc", "tok") if weights[k] > 0 and k != "enc"]
        + ([f"enc-{kd_cfg.get('enc_kind', 'contrastive')}"] if weights["enc"] > 0 else [])
    )
    results = {
        "row": cfg["row"],
        "role": role,
        "seed": int(cfg["seed"]),
        "kd": kd_name or ("-" if role == "student" else ""),
        "captioned_fraction": float(cfg.get("captioned_fraction", 1.0)),
        "audio_only": use_ao,
        "params": n_params,
        "n_train": len(rows["train"]),
        "n_audio_only": len(rows["audio_only"]) if use_ao else 0,
        "best_valid_CIDEr_D": trainer.best["cider"],
        "best_epoch": trainer.best["epoch"],
        **summary,
        "test": {k: v for k, v in metrics.items() if k != "per_item_CIDEr_D"},
    }
    atomic_write_json(out / "results.json", results)
    logger.info("%s test: CIDEr-D %.3f BLEU-4 %.3f", cfg["row"], metrics["CIDEr_D"], metrics["BLEU_4"])
    return results
