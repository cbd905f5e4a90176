"""Evaluation: SLURP scoring (official metrics), WER/CER, continual-learning metrics from a results matrix."""
