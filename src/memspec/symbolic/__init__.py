"""Symbolic arithmetic: dims as sympy symbols, spec arithmetic built structurally."""
