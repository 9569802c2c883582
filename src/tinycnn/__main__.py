"""``python -m tinycnn``: the ``tinycnn`` command."""

import sys

from .cli import main

sys.exit(main())
