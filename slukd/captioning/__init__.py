"""Efficient audio captioning with encoder-level knowledge distillation (the project's second task).

- :mod:`.data`: clip datasets, batching, per-epoch caption choice
- :mod:`.models`: teacher / student construction from YAML specs
- :mod:`.kd`: teacher outputs cached once per teacher (beam-3 pseudo-captions, pooled encoder embeddings)
- :mod:`.train`: the resumable training loop (supervised CE + KD terms through :mod:`slukd.distill`)
- :mod:`.evaluate`: whole-split decoding and caption metrics, predictions and sample captions
- :mod:`.report`: the results table (CSV + Markdown) across rows
- :mod:`.run`: what ``recipes/captioning_kd.py`` calls
"""
