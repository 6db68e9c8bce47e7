"""An answer checked against a job's JSON Schema: jsonschema's draft 2020-12 validator, with a
``referencing`` registry that never retrieves.

A schema is the producer's: it must never make the worker open a connection or a file. The
registry holds the schema itself (and jsonschema's own meta-schemas) and answers every other
URI with "no such resource", so a ``$ref`` out of the schema is a schema that cannot be applied
— intake refuses those already (``schemas/json_schema.py``); this holds for records intake saw
before it did. jsonschema's and referencing's errors are mapped here, once, to
:class:`Unusable`, whose text is ours: never an exception's repr (it may hold a document).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, UnknownType, ValidationError
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

#: a schema's validator, kept per schema text (a batch's jobs share one schema)
_CACHED_SCHEMAS = 256
_SHOWN = 100  # characters of a reference or keyword quoted in an error


class Unusable(Exception):
    """The schema cannot be applied to the answer; the message says why, in words."""


def _never_retrieve(uri: str) -> Resource[Any]:
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


NO_RETRIEVAL: Registry[Any] = Registry(retrieve=_never_retrieve)  # type: ignore[call-arg]


def first_error(schema: dict[str, Any], value: Any) -> ValidationError | None:
    """The first way ``value`` fails ``schema`` (None: it is valid); :class:`Unusable` when the
    schema cannot be applied."""
    try:
        validator = _validator(json.dumps(schema, sort_keys=True))
        return next(iter(validator.iter_errors(value)), None)
    except Unusable:
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
def _validator(schema_text: str) -> Draft202012Validator:
    schema = json.loads(schema_text)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as error:
        raise Unusable(f"not a JSON Schema: {error.message[:_SHOWN]}") from None
    except RecursionError:
        raise Unusable("nested too deeply") from None
    return Draft202012Validator(schema, registry=NO_RETRIEVAL)
