"""Deterministic synthetic data in the exact U2-Bench layout (the bundled sample and the full-size set)."""
