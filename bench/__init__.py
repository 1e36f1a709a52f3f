"""reminderd's benchmark: `bench/run.py` runs it (see bench/README.md)."""
