"""``python -m scg_core``: hints and decompositions from the command line (:mod:`scg_core.hosts.cli`)."""

import sys

from .hosts.cli import main

sys.exit(main())
