"""``python -m taskexec``: the same as the ``taskexec`` command."""

import sys

from taskexec.cli import main

sys.exit(main())
