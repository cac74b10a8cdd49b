"""``python -m sttwatch``: the same as the ``sttwatch`` console script."""

import sys

from .cli import main

sys.exit(main())
