"""``python -m mailkit_edu serve`` is the same as ``mailkit-edu serve``."""

import sys

from .cli import main

sys.exit(main())
