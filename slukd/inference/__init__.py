"""Apply a finished run to new audio: the Python interface (:mod:`slukd.inference.api`), the export for
SpeechBrain's pretrained interfaces (:mod:`slukd.inference.export`) and the ``slukd understand | caption | export``
commands (:mod:`slukd.inference.cli`).

    from slukd.inference import from_run, export_run
    slu = from_run("results/demo/joint/seed0")      # the last finished task's model
    slu.understand(["a.wav", waveform])               # paths, numpy arrays or torch tensors
    export_run("results/demo/joint/seed0", "exported/slu_joint")
"""

from slukd.inference.api import (
    AudioInput,
    Captioner,
    InferenceError,
    SLUModel,
    decode_waveforms,
    finished_tasks,
    from_run,
    run_kind,
    select_task,
    slu_result,
)
from slukd.inference.cli import cli_main, format_prediction
from slukd.inference.export import EXPORT_CLASSES, EXPORT_MARKER, export_run, load_export, model_card

__all__ = [
    "InferenceError",
    "SLUModel",
    "Captioner",
    "AudioInput",
    "from_run",
    "run_kind",
    "finished_tasks",
    "select_task",
    "decode_waveforms",
    "slu_result",
    "export_run",
    "load_export",
    "model_card",
    "EXPORT_CLASSES",
    "EXPORT_MARKER",
    "cli_main",
    "format_prediction",
]
