"""Specs: a usage event's id is the RFC 4122 version-5 UUID of its provider call."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from workers.settle.outcomes import _EVENT_NAMESPACE, event_id


@given(
    tenant=st.text(min_size=1, max_size=64),
    job_id=st.text(min_size=1, max_size=128),
    generation=st.integers(min_value=0, max_value=2**31),
    index=st.integers(min_value=0, max_value=1000),
)
def test_event_id_is_uuid5_of_tenant_job_generation_and_call_index(
    tenant: str, job_id: str, generation: int, index: int
) -> None:
    name = f"{tenant}\x00{job_id}\x00{generation}\x00{index}"
    assert event_id(tenant, job_id, generation, index) == str(uuid.uuid5(_EVENT_NAMESPACE, name))


def test_event_ids_differ_between_calls_of_one_job_and_repeat_for_the_same_call() -> None:
    first, second = event_id("t", "j", 1, 0), event_id("t", "j", 1, 1)
    assert first != second
    assert event_id("t", "j", 1, 0) == first
    assert uuid.UUID(first).version == 5
