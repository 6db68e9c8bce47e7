"""Python's cyclic garbage collector, tuned while a worker runs.

A worker holds a large, long-lived heap (pydantic and SQLAlchemy models, OpenTelemetry, the
config) and allocates many short-lived containers per job. With CPython's default thresholds
(700, 10, 10) the collector walks that heap again and again: in the overhead benchmark it cost
~30 % of the worker's CPU (1,400 → 2,000 jobs/s with the tuning below, ``docs/performance.md``).
Reference counting still frees almost everything at once; the collector only finds cycles.

While a worker runs: objects alive at start-up are frozen (``gc.freeze()``: never scanned again)
and a generation-0 collection waits for ``threshold`` new container objects instead of 700.
Leaving restores Python's settings. Nested workers in one process (tests) share one tuning:
the first to enter applies it, the last to leave restores it.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

# generations 1 and 2: how many collections of the younger generation before the older one
OLDER_GENERATIONS = (20, 100)

_users = 0
_saved: tuple[int, int, int] | None = None


@contextlib.contextmanager
def tuned_gc(threshold: int) -> Iterator[None]:
    """Freeze the start-up heap and collect generation 0 every ``threshold`` allocations
    (0: leave the collector as it is)."""
    global _users, _saved
    if threshold <= 0:
        yield
        return
    if _users == 0:
        _saved = gc.get_threshold()
        gc.collect()
        gc.freeze()
        gc.set_threshold(threshold, *OLDER_GENERATIONS)
    _users += 1
    try:
        yield
    finally:
        _users -= 1
        if _users == 0 and _saved is not None:
            gc.unfreeze()
            gc.set_threshold(*_saved)
            _saved = None
