"""``python -m npad``: the command line (see npad.cli)."""
from .cli import main

main()
