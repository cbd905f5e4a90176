"""Data: SLURP manifests, the SLU decoder target, the tokenizer, the built-in corpora (see docs/architecture.md)."""
