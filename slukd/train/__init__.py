"""The one training stack of both recipes: a SpeechBrain ``Brain`` with knowledge distillation (:class:`KDBrain`),
checkpoints that count only once complete, and learning-rate schedules declared in YAML."""

from slukd.train.brain import KDBrain, make_train_logger
from slukd.train.checkpoint import CompleteCheckpointer
from slukd.train.schedulers import WarmupConstant, WarmupCosine

__all__ = ["KDBrain", "make_train_logger", "CompleteCheckpointer", "WarmupConstant", "WarmupCosine"]
