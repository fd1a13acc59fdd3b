"""`python -m overnight_agent.fakegemini`: the stand-in, as a program."""
import sys

from .cli import main

sys.exit(main())
