"""`python -m router.cli`: the same as the `mlfe` console script."""

import sys

from router.cli.entry import main

sys.exit(main())
