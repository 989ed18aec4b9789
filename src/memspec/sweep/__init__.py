"""`memspec sweep`: every category and the true peak over a grid of sizes.

`grid` reads the `--grid` axes, `evaluate` evaluates formulas over them exactly with
numpy, `sweep` compiles the spec and serves each point from the formulas whose decisions
hold there. Import from those modules (this package imports nothing, so that the
command line's help does not load numpy).
"""
