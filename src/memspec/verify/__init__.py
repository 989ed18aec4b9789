"""Checks predictions against a real PyTorch training step (needs the `verify` extra)."""
