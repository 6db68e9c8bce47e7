"""``python -m workers`` — the same as the ``headway`` command."""

from workers.cli import main

if __name__ == "__main__":
    main()
