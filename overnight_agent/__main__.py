"""`python -m overnight_agent`: the same as the `overnight-agent` command."""
import sys

from .cli import main

sys.exit(main())
