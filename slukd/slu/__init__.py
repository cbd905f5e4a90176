"""The SLU student: SpeechBrain Brain subclass, datasets from manifests, evaluation and SLURP predictions."""
