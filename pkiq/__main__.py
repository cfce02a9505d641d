"""``python -m pkiq``: the same as the ``pkiq`` command."""

from pkiq.cli import main

main()
