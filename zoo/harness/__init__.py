"""The shared harness (work in progress)."""
