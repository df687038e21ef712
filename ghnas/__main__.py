"""``python -m ghnas``: the same as the ``ghnas`` command (see :mod:`ghnas.cli`)."""
import sys

from ghnas.cli import main

sys.exit(main())
