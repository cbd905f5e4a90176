"""The SLU task: the SLUBrain (supervised CE + CTC, KD on the rehearsal memory), data preparation and datasets,
decoding to SLURP predictions and scores. The recipe ``recipes/slurp_incremental.py`` wires them together."""

from slukd.slu.brain import SLUBrain
from slukd.slu.data import make_dataset
from slukd.slu.prepare import SLUData, label_report, prepare_corpus, prepare_scenario, prepare_tokenizer
from slukd.slu.strategy import SLUStrategy

__all__ = ["SLUBrain", "SLUStrategy", "SLUData", "make_dataset", "prepare_corpus", "prepare_tokenizer",
           "prepare_scenario", "label_report"]  # fmt: skip
