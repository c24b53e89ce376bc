"""`python -m pulumicli <pulumi arguments>`: see pulumicli/__init__.py."""

import sys

from pulumicli.cli import main

sys.exit(main(sys.argv[1:]))
