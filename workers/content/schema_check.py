"""An answer checked against a job's JSON Schema: off the event loop, on a clock, never
retrieving, in linear time where jsonschema would not be.

A schema is the producer's code running in the worker. So:
- the validator is jsonschema's draft 2020-12 with a ``referencing`` registry that holds the
  schema itself (and jsonschema's meta-schemas) and answers every other URI "no such resource":
  a ``$ref`` out of the schema is a schema that cannot be applied, never a fetch (intake
  refuses those already, ``schemas/json_schema.py``; this holds for records it saw before);
- the keywords a schema could make super-linear are linear and every keyword is on the clock
  (``schema_keywords.py``); checks run in :class:`Checks`' own threads, each within
  :data:`BUDGET_S`, so the event loop only waits for them;
- jsonschema's and referencing's errors are mapped here, once, to :class:`Unusable`, whose text
  is ours: never an exception's repr (it may hold a document).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar

from jsonschema.exceptions import UnknownType, ValidationError
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

from schemas import json_schema
from schemas.content import check_schema
from workers.content.schema_keywords import DEADLINE, Linear, OverBudget

#: the longest one check may run (an answer against its schema, or a schema's own check)
BUDGET_S = 2.0
#: threads checking at once, per worker process (each one competes with the event loop for the
#: GIL only until its budget ends)
THREADS = 2
#: a schema's validator, kept per schema text (a batch's jobs share one schema)
_CACHED_SCHEMAS = 256
_SHOWN = 100  # characters of a reference or keyword quoted in an error
T = TypeVar("T")


class Unusable(Exception):
    """The schema cannot be applied to the answer; the message says why, in words."""


def _never_retrieve(uri: str) -> Resource[Any]:
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


NO_RETRIEVAL: Registry[Any] = Registry(retrieve=_never_retrieve)  # type: ignore[call-arg]


class Checks:
    """Where checks of producers' schemas run: threads of their own, each check on a clock,
    and one check of a tenant's in the threads at a time — a tenant's checks queue behind each
    other, not in front of another tenant's (20 slow schemas of one tenant held the pool 14 s)."""

    def __init__(self, budget_s: float = BUDGET_S, threads: int = THREADS) -> None:
        self.budget_s = budget_s
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, "headway-schema-check")
        self._turns: dict[str, tuple[asyncio.Lock, int]] = {}  # tenant -> (turn, waiting)

    async def run(self, work: Callable[[], T], tenant: str | None = None) -> T:
        """``work`` (a check calling :func:`first_error`) in a check thread, within the budget:
        :class:`Unusable` when it runs past it. ``tenant``: whose check (None: its own turn)."""
        return await self._run(work, tenant)

    async def schema_refused(
        self, response_format: dict[str, Any] | None, tenant: str | None = None
    ) -> str | None:
        """Why a job's ``response_format`` schema cannot be applied (its meta-schema, its
        patterns: ``schemas.content.check_schema``), or None; within the budget."""
        if (response_format or {}).get("type") != "json_schema":
            return None
        text = json.dumps(response_format, sort_keys=True)
        try:
            return await self._run(lambda: _refused(text), tenant)
        except Unusable as unusable:
            return f"params.response_format: response_format.json_schema.schema: {unusable}"

    async def _run(self, work: Callable[[], T], tenant: str | None) -> T:
        if tenant is None:
            return await self._threaded(work)
        turn, waiting = self._turns.get(tenant) or (asyncio.Lock(), 0)
        self._turns[tenant] = (turn, waiting + 1)
        try:
            async with turn:
                return await self._threaded(work)
        finally:
            turn, waiting = self._turns[tenant]
            if waiting == 1:
                del self._turns[tenant]
            else:
                self._turns[tenant] = (turn, waiting - 1)

    async def _threaded(self, work: Callable[[], T]) -> T:
        def timed() -> T:  # the clock starts when a thread takes the check, not while it waits
            token = DEADLINE.set(time.monotonic() + self.budget_s)
            try:
                return work()
            except OverBudget:
                raise Unusable(f"applying it took longer than {self.budget_s:g} s") from None
            finally:
                DEADLINE.reset(token)

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, timed)


def first_error(schema: dict[str, Any], value: Any) -> ValidationError | None:
    """The first way ``value`` fails ``schema`` (None: it is valid); :class:`Unusable` when the
    schema cannot be applied. Runs where it is called: :class:`Checks` runs it off the loop."""
    try:
        validator = _validator(json.dumps(schema, sort_keys=True))
        return next(iter(validator.iter_errors(value)), None)
    except (Unusable, OverBudget):
        raise
    except Unresolvable as error:  # includes jsonschema's wrapper of referencing's errors
        raise Unusable(f"the reference {str(error.ref)[:_SHOWN]!r} cannot be resolved") from None
    except RecursionError:
        raise Unusable("its references loop, or it is nested too deeply") from None
    except UnknownType as error:
        raise Unusable(f"unknown type {str(error.type)[:_SHOWN]!r}") from None
    except Exception as error:  # a schema jsonschema cannot apply: hostile or broken
        raise Unusable(f"jsonschema raised {type(error).__name__}") from None


@lru_cache(maxsize=_CACHED_SCHEMAS)
def _refused(response_format_text: str) -> str | None:
    return check_schema(json.loads(response_format_text))


@lru_cache(maxsize=_CACHED_SCHEMAS)
def _validator(schema_text: str) -> Any:
    schema = json.loads(schema_text)
    try:  # a record intake saw before it checked schemas is checked now
        json_schema.check(schema, "the schema")
    except ValueError as error:
        raise Unusable(str(error)) from None
    except RecursionError:
        raise Unusable("nested too deeply") from None
    return Linear(schema, registry=NO_RETRIEVAL)


#: the worker process's checks (one pool for every job: a tenant's checks wait only for the
#: checks ahead of them, each bounded by the budget)
CHECKS = Checks()
