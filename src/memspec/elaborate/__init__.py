"""AST -> IR: resolve names, instantiate layers, infer and check shapes."""

from memspec.elaborate.elaborate import Elaboration, elaborate

__all__ = ["Elaboration", "elaborate"]
