"""Differential tests against the libraries people train with.

transformers imports torchvision whenever it is installed (for its image utilities), and
the registry's torchvision imports only through `torchvision_import` beside the CPU
torch: so it is imported that way first, before any test module imports transformers.
"""

import importlib.util

if importlib.util.find_spec("torchvision") is not None:
    from tests.reference.torchvision_import import import_torchvision

    import_torchvision()
