"""`python -m overnight_agent.fakecodex`: the stand-in, as a program."""
import sys

from .cli import main

sys.exit(main())
