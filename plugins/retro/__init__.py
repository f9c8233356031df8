"""RETRO (work in progress)."""
