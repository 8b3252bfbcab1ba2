"""``python -m tallygate``: the same as the ``tallygate`` command."""

from tallygate.cli import main

main()
