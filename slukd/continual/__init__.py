"""Class-incremental learning: task splits (scenario), rehearsal memory, the per-task loop."""
