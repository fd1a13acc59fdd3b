"""`python -m overnight_agent.fakeclaude`: the stand-in, as a program."""
import sys

from .cli import main

sys.exit(main())
