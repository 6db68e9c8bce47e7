"""``python -m workers.devstack.simulator`` — the same as ``headway simulator``."""

from workers.cli.main import main

if __name__ == "__main__":
    import sys

    main(["simulator", *sys.argv[1:]])
