"""`python -m handover.cli` runs the `handover` command."""

import sys

from handover.cli.main import main

sys.exit(main())
