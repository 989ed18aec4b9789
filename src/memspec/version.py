"""memspec's version, in a module of its own so that the caches can key on it without
importing the package (whose `compile_spec` pulls in the whole compiler)."""

__version__ = "0.1.0"  # pyproject.toml's `version` (a test keeps them equal)
