"""``python -m detpipe.devices.cli``: the ``detpipe`` command without its console script (the demo starts its
simulator and server this way, so they run in the same interpreter and environment)."""

import sys

from .main import main

sys.exit(main())
