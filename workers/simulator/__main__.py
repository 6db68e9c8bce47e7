"""``python -m workers.simulator`` — the same as ``headway simulator``."""

from workers.cli import main

if __name__ == "__main__":
    import sys

    main(["simulator", *sys.argv[1:]])
