"""The callback client conformance suite (a package, so its conftest does not shadow tests/conftest.py)."""
