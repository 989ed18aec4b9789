"""`python -m memspec` runs the command line."""

import sys

from memspec.cli import main

sys.exit(main())
