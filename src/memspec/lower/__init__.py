"""IR -> PyTorch: a runnable module at concrete sizes (needs the `verify` extra: torch)."""
