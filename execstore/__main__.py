"""Entry point of ``python -m execstore``; the commands are in ``_cli``."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
