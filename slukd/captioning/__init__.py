"""Efficient audio captioning with encoder-level knowledge distillation (the project's second task).

- :mod:`.prepare`: corpus, manifests, audio check, the audio-only pools (caption-free ``pool``, uncaptioned
  ``remainder``), the vocabulary
- :mod:`.data`: SpeechBrain datasets (the epoch's reference per clip; audio-only clips with pseudo-captions)
- :mod:`.models`: teacher / student construction (``build_captioner`` for YAML)
- :mod:`.brain`: :class:`CaptionBrain` (supervised CE + KD terms through :mod:`slukd.distill`, audio-only batches)
- :mod:`.evaluate`: whole-split decoding and caption metrics, predictions and sample captions
The recipe ``recipes/captioning_kd.py`` wires them together.
"""
