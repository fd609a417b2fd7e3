"""``python -m parity.cli`` is the ``npgpt`` command (torchrun launches it this way)."""

import sys

from parity.cli import main

sys.exit(main())
