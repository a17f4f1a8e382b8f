"""Run the command line: ``python -m lrml --help``."""

import sys

from lrml.cli import main

sys.exit(main())
