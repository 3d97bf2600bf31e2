"""``python -m scg_core.characterize``: what each module of a Modular AE encodes
(:mod:`scg_core.tools.characterize`)."""

import sys

from .tools.characterize import main

if __name__ == "__main__":
    sys.exit(main())
