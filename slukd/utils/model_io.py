"""A trained model as files anyone can load back: ``model.yaml`` (how to build it) next to its weights.

``model.yaml`` holds the ``model`` node of the run's resolved hparams (a HyperPyYAML ``!name:`` builder with its
arguments, references resolved) plus plain fields such as ``vocab_size`` and the decoding settings the model was
evaluated with. :func:`load_model` rebuilds the architecture from it and loads a state dict, the way a student row
loads its teacher and the inference API loads a finished run.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from ruamel.yaml import YAML

from slukd.utils.io import atomic_write_text

__all__ = ["save_model_spec", "read_model_spec", "build_model_from_spec", "load_model"]

SPEC_NAME = "model.yaml"


def save_model_spec(folder: str | os.PathLike, resolved_text: str, key: str = "model", **fields: Any) -> Path:
    """Write ``folder/model.yaml``: the ``key`` node of ``resolved_text`` (as ``model:``) and ``fields``."""
    y = YAML(typ="rt")
    tree = y.load(resolved_text)
    if key not in tree:
        raise KeyError(f"the resolved hparams have no {key!r} entry to export")
    from slukd.config import strip_comments

    out = {"model": strip_comments(tree[key]), **fields}
    buf = io.StringIO()
    y.dump(out, buf)
    return atomic_write_text(Path(folder) / SPEC_NAME, buf.getvalue())


def read_model_spec(folder: str | os.PathLike) -> dict[str, Any]:
    """The plain fields of ``folder/model.yaml`` (everything but the builder)."""
    path = Path(folder) / SPEC_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no model description (is {folder} a finished run folder?)")
    data = YAML(typ="safe", pure=True).load(_strip_builder(path.read_text(encoding="utf-8"))) or {}
    return {k: v for k, v in data.items() if k != "model"}


def _strip_builder(text: str) -> str:
    lines, out, skipping = text.splitlines(), [], False
    for ln in lines:
        if ln.startswith("model:"):
            skipping = True
            continue
        if skipping and (ln.startswith(" ") or not ln.strip()):
            continue
        skipping = False
        out.append(ln)
    return "\n".join(out) + "\n"


def build_model_from_spec(folder: str | os.PathLike, **kwargs: Any) -> torch.nn.Module:
    """Build the (untrained) architecture of ``folder/model.yaml``; ``kwargs`` default to the spec's
    ``vocab_size``."""
    from hyperpyyaml import load_hyperpyyaml

    path = Path(folder) / SPEC_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no model description (is {folder} a finished run folder?)")
    hp = load_hyperpyyaml(path.read_text(encoding="utf-8"))
    builder = hp["model"]
    if "vocab_size" in hp and "vocab_size" not in kwargs:
        kwargs["vocab_size"] = hp["vocab_size"]
    return builder(**kwargs)


def load_model(folder: str | os.PathLike, weights: str | os.PathLike, device: str = "cpu") -> torch.nn.Module:
    """The model of ``folder/model.yaml`` with the state dict in ``weights``, in eval mode on ``device``."""
    model = build_model_from_spec(folder)
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: no model weights")
    model.load_state_dict(torch.load(weights, map_location="cpu"))
    return model.to(device).eval()
