"""The ``headway`` command line: one module per group of commands."""
