"""The embedded stack for ``headway demo`` and ``dev``: Tansu, the simulator, demo data."""
