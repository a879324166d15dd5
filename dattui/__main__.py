"""`python -m dattui`: the same as the `dattui` command."""

from dattui.tui.main import main

if __name__ == "__main__":
    raise SystemExit(main())
