"""Frozen teacher snapshots: deep copy, eval mode, no gradients, placed on the right device.

How a recipe uses it (SpeechBrain): the ``Teacher`` is an ``nn.Module`` so that the Checkpointer can save and
restore it as a recoverable (``checkpointer.add_recoverable("teacher", teacher)``), but it must be kept OUT of the
Brain's ``modules`` dict: ``modules`` is what SpeechBrain hands to the optimiser, moves between train/eval and wraps
in DDP. A teacher inside ``modules`` would be DDP-wrapped (DDP refuses modules without trainable parameters) and
its parameters offered to the optimiser. Its parameters have ``requires_grad=False`` as a second line of defence.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["Teacher", "fingerprint_state_dict"]


def fingerprint_state_dict(obj: nn.Module | Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a module's ``state_dict`` (or of a state dict): names, dtypes, shapes and exact values.

    Independent of device and of dict order; any change to any parameter or buffer changes it. A wrapping
    ``Teacher`` hashes like the module it wraps.
    """
    if isinstance(obj, Teacher):
        obj = obj.module
    state = obj.state_dict() if isinstance(obj, nn.Module) else obj
    if not isinstance(state, Mapping):
        raise TypeError(f"fingerprint_state_dict expects an nn.Module or a state dict, got {type(obj).__name__}")
    h = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        h.update(name.encode("utf-8") + b"\0")
        if isinstance(value, torch.Tensor):
            t = value.detach().to("cpu").contiguous()
            h.update(f"{t.dtype}|{tuple(t.shape)}\0".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(value).encode("utf-8") + b"\0")
    return h.hexdigest()


class Teacher(nn.Module):
    """A frozen snapshot of ``module``: never optimised, never in train mode, forward without gradients.

    - ``Teacher(module, device=None)`` deep-copies ``module`` (the original is untouched and may keep training),
      freezes every parameter, switches to eval mode and moves to ``device`` (default: the module's own device).
    - ``teacher(*args)`` runs the wrapped module's ``forward`` under ``torch.no_grad()`` (not inference_mode, whose
      tensors cannot enter the student's autograd graph); ``teacher.run(fn, *args)`` does the same for any other
      entry point, e.g. ``teacher.run(lambda m: m.encode(wavs, lens))``.
    - ``train()`` is a no-op that keeps eval mode (dropout stays off even when the Brain switches modes).
    - ``state_dict()`` / ``load_state_dict()`` are the ``nn.Module`` ones (keys prefixed ``module.``), so the
      Checkpointer saves and restores it; ``fingerprint`` identifies its exact weights (teacher-target cache key).
    """

    def __init__(self, module: nn.Module, device: str | torch.device | None = None):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"Teacher wraps an nn.Module, got {type(module).__name__}")
        self.module = self._freeze(module, device)
        nn.Module.train(self, False)

    @staticmethod
    def _module_device(module: nn.Module) -> torch.device:
        for t in list(module.parameters()) + list(module.buffers()):
            return t.device
        return torch.device("cpu")

    def _freeze(self, module: nn.Module, device) -> nn.Module:
        if isinstance(module, Teacher):
            module = module.module
        # Unwrap DDP / DataParallel so the snapshot is a plain module.
        while isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            module = module.module
        target = torch.device(device) if device is not None else self._module_device(module)
        snap = copy.deepcopy(module)
        snap.requires_grad_(False)
        snap.to(target)
        nn.Module.train(snap, False)
        return snap

    @property
    def device(self) -> torch.device:
        """Where the teacher's weights live."""
        return self._module_device(self.module)

    @property
    def fingerprint(self) -> str:
        """:func:`fingerprint_state_dict` of the wrapped module (recomputed on each access: one pass over weights)."""
        return fingerprint_state_dict(self.module)

    def train(self, mode: bool = True) -> Teacher:
        """Ignore mode switches: a teacher always stays in eval mode."""
        nn.Module.train(self, False)
        return self

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped module's forward, without gradients."""
        with torch.no_grad():
            return self.module(*args, **kwargs)

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(module, *args, **kwargs)`` under ``torch.no_grad()``, for entry points other than forward."""
        with torch.no_grad():
            return fn(self.module, *args, **kwargs)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Restore saved teacher weights (as the Checkpointer does); stays frozen and in eval mode."""
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.module.requires_grad_(False)
        nn.Module.train(self.module, False)
        return result
