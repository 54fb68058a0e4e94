"""`python -m axiomnet ...` is the same as the `axiomnet` command."""

import sys

from axiomnet.ops.cli import main

sys.exit(main())
