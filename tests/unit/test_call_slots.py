"""Specs: provider-call slots are held from the call until the result is stored, once."""

from __future__ import annotations

import asyncio

from workers.calls.slots import CallSlots


async def test_a_slot_given_back_when_stored_is_not_given_back_again_on_leaving() -> None:
    slots = CallSlots(1)
    async with slots.take() as slot:
        slot.release()  # stored: the next job may call while this one publishes
        async with slots.take():  # would wait forever if the slot were still held
            pass
    # leaving the first block released nothing twice: one slot, and it is free
    async with slots.take():
        waiting = asyncio.create_task(slots.take().__aenter__())
        await asyncio.sleep(0.01)
        assert not waiting.done()
    await asyncio.wait_for(waiting, 1)


async def test_jobs_beyond_the_slots_wait_until_one_is_given_back() -> None:
    slots = CallSlots(2)
    order: list[str] = []

    async def job(name: str, hold_s: float) -> None:
        async with slots.take():
            order.append(name)
            await asyncio.sleep(hold_s)

    await asyncio.gather(job("a", 0.05), job("b", 0.05), job("c", 0))
    assert order == ["a", "b", "c"]


async def test_a_job_that_calls_no_provider_takes_no_slot() -> None:
    slots = CallSlots(1)
    async with slots.take(), CallSlots.none() as spare:
        spare.release()  # nothing to give back: harmless
    async with slots.take():
        pass
