"""reminderd's benchmark: `bench/run.py` runs it (see bench/README.md)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the checkout: git metadata, and the daemon's cwd
