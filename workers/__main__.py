"""``python -m workers`` — the same as the ``headway`` command."""

from workers.cli.main import main

if __name__ == "__main__":
    main()
