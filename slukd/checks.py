"""Checks of a run's settings that one key's type and range cannot express, made before any work.

:func:`slukd.config.load_hparams` checks every key on its own (type, range, choices). What is left is checked here,
on the loaded hparams, by the recipe (before its run folder is touched) and by ``slukd sweep`` (for every run of
the sweep, before the first run starts):

- cross-key rules (a memory size is ``memory_per_class`` or ``memory_fraction``, never both);
- optional extras a setting needs (``tensorboard: true`` needs the tensorboard package, a pretrained encoder needs
  transformers, the aac-metrics backend needs aac-metrics);
- the data: a built-in corpus folder that holds another tier or seed is an error naming the flag (a training run
  never deletes or rebuilds a corpus); a real corpus folder must exist.

Every failure is one :class:`SettingsError` (a :class:`~slukd.config.HparamValueError`) naming the setting.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slukd.config import HparamsError, HparamValueError

__all__ = ["SettingsError", "check_slu", "check_captioning", "CHECKS"]


class SettingsError(HparamValueError):
    """Settings that cannot work together (or need something missing), found before any work."""


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _extras(hp: dict[str, Any]) -> None:
    """Optional packages the settings need."""
    if hp.get("tensorboard") and not _has("tensorboard"):
        raise SettingsError("--tensorboard=true needs the tensorboard package: pip install 'slukd[tensorboard]'")


def check_slu(hp: dict[str, Any]) -> None:
    """The class-incremental SLU recipe's cross-key rules, extras and data (see the module docstring)."""
    from slukd.continual.plugin import check_plugins
    from slukd.data.synth_slu import CorpusError, check_corpus

    _extras(hp)
    try:  # each continual method's own rules (the rehearsal memory: exactly one size, a known rule)
        for plugin in check_plugins(hp["continual_methods"] + hp["extra_continual_methods"]):
            plugin.check()
    except (HparamsError, ValueError, TypeError) as err:
        raise SettingsError(str(err)) from None
    if hp.get("pretrained_folder") and not _has("transformers"):
        raise SettingsError("--pretrained_folder needs transformers: pip install 'slukd[pretrained]'")
    order = str(hp["order"])
    if order not in ("fixed", "random") and not Path(order).is_file():
        raise SettingsError(f"--order: {order} is neither fixed, random nor an order file")
    data = Path(hp["data_folder"])
    if hp["corpus"] == "demo":
        try:
            check_corpus(data, hp["tier"], hp["corpus_seed"])
        except CorpusError as err:
            raise SettingsError(str(err)) from None
    elif not (data / "dataset" / "slurp").is_dir():
        raise SettingsError(f"--data_folder: {data} is not a SLURP-layout folder (no dataset/slurp/*.jsonl)")
    if hp.get("test_data_folder") and not Path(hp["test_data_folder"]).is_dir():
        raise SettingsError(f"--test_data_folder: {hp['test_data_folder']} does not exist")


def check_captioning(hp: dict[str, Any]) -> None:
    """The captioning recipe's extras and data (see the module docstring)."""
    from slukd.data.synth_scenes import check_scenes
    from slukd.data.synth_slu import CorpusError

    _extras(hp)
    options = hp.get("metric_options") or {}
    if options.get("backend") == "aac-metrics" and not _has("aac_metrics"):
        raise SettingsError("--metric_options.backend=aac-metrics needs aac-metrics: pip install 'slukd[metrics]'")
    data = Path(hp["data_folder"])
    if hp["corpus"] == "scenes":
        try:
            check_scenes(data, hp["tier"], int(hp["corpus_seed"]))
        except CorpusError as err:
            raise SettingsError(str(err)) from None
    elif not data.is_dir():
        raise SettingsError(f"--data_folder: {data} does not exist (corpus {hp['corpus']})")
    if hp.get("audio_only_folder") and not Path(hp["audio_only_folder"]).is_dir():
        raise SettingsError(f"--audio_only_folder: {hp['audio_only_folder']} does not exist")


#: recipe name (as in ``slukd train``/``slukd sweep``) -> its check
CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {"slu": check_slu, "captioning": check_captioning}
