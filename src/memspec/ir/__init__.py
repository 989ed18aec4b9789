"""The IR: values, op applications and repeat regions (see `ir/graph.py`)."""
