"""Entry point of ``python -m execstore``. The commands are in ``_cli``."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
