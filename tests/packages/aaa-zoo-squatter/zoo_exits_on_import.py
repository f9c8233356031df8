"""Calls sys.exit(3) at import: the zoo must contain it and keep working."""

import sys

sys.exit(3)
