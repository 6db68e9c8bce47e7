"""``kill -USR1 <pid>``: a running worker writes the stack of every asyncio task to its log.

For the question an operator has when a process seems stuck — what is every task waiting on —
without stopping it or attaching a debugger.
"""

from __future__ import annotations

import asyncio
import io
import logging
import signal

log = logging.getLogger(__name__)
MAX_FRAMES = 12


def dump_tasks() -> str:
    """Every task of the running loop, each with its (innermost) stack."""
    out = io.StringIO()
    tasks = asyncio.all_tasks()
    out.write(f"{len(tasks)} asyncio tasks\n")
    for task in tasks:
        task.print_stack(limit=MAX_FRAMES, file=out)
    return out.getvalue()


def install_stack_dump(loop: asyncio.AbstractEventLoop) -> None:
    """SIGUSR1 logs :func:`dump_tasks` (where the platform has SIGUSR1)."""
    usr1 = getattr(signal, "SIGUSR1", None)
    if usr1 is None:
        return
    loop.add_signal_handler(usr1, lambda: log.warning("task dump on SIGUSR1:\n%s", dump_tasks()))
