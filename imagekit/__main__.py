"""``python -m imagekit`` is the ``imagekit`` command."""

from .cli import main

main()
