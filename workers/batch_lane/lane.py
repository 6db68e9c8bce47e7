"""The provider Batch-API lane in a worker: hand jobs over, pack them, poll, finish or fall back.

See docs/batch-lane.md. Every worker with a ``batch = true`` deployment runs the pack and poll
loops; the ledger's leases make sure a pending item is packed by one worker and a submission
polled by one at a time.

- :meth:`BatchLane.hand_over` (from the pipeline, after the claim and admission): the job's
  request line is stored, its row and budget hold pass to the lane; the record's offset may
  then be committed — the database owns the job.
- :meth:`BatchLane.pack_once`: per deployment, pending items up to the provider's limits
  (requests and bytes) or ``max_items``, submitted as one provider batch once it is full or
  its oldest item has waited ``wait_s``; and items whose deadline came near while they
  waited go back online.
- :meth:`BatchLane.poll_once`: one submission that is due a look; when ended, each item is
  settled on its own (:mod:`.settling`): finished like an online call at the batch price, or
  handed back to the online path — and the submission ends once every item is settled. A look
  that fails (the provider or the ledger away) is made again after ``poll_every_s``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from broker.config import DeploymentConfig, HeadwayConfig
from broker.errors import ProviderBadRequest
from broker.settings import BatchLaneSettings
from workers.batch_lane.items import Handed, call_of, identity, new_item
from workers.batch_lane.settling import ItemSettler
from workers.calls.executor import Executor
from workers.ledger import batch_lane_rows as rows
from workers.ledger.database.transactions import Transact
from workers.pipeline.cancellations import Cancellations
from workers.pipeline.preparation import Preparation
from workers.providers.batch_apis import BatchAPI, BatchState, Call, Outcome
from workers.settle.outcomes import CANCELLED
from workers.settle.settlement import Settlement

log = logging.getLogger(__name__)

PACK_LEASE_S = 300.0  # a packing worker's hold on the items it is submitting
POLL_LEASE_S = 300.0  # a polling worker's hold on a submission while it settles the items
HOLD_S = 26 * 3600.0  # how long the lane holds a job without a deadline before it lapses
SETTLE_CHUNK = 1000  # items of an ended batch settled at once (the ledger batches them)


class BatchLane:
    def __init__(
        self,
        config: HeadwayConfig,
        apis: dict[str, BatchAPI],
        run: Transact,
        settlement: Settlement,
        preparation: Preparation,
        owner: str,
        settings: BatchLaneSettings,
        cancellations: Cancellations,
        executor: Executor | None = None,  # asks online once more for an invalid JSON answer
    ) -> None:
        self._apis = apis
        self._run = run
        self._settlement = settlement
        self._owner = owner
        self.settings = settings
        self._cancellations = cancellations
        self._settler = ItemSettler(config, run, settlement, preparation, executor)
        self._deployments = {
            d.key: d for route in config.routes.values() for d in route.deployments if d.batch
        }
        self.handed_over = 0
        self.submissions = 0

    # -- hand-over ----------------------------------------------------------------------------

    async def hand_over(self, handed: Handed) -> None:
        api = self._apis[handed.deployment.provider]
        item = new_item(handed, api)
        now = time.time()
        hold_until = item.deadline if item.deadline is not None else now + HOLD_S
        await self._run(lambda conn: rows.enqueue(conn, item, hold_until, now))
        self.handed_over += 1

    # -- packing ------------------------------------------------------------------------------

    async def pack_once(self) -> int:
        """Send overdue items back online, submit what is pending; returns submissions made."""
        await self._sweep_overdue()
        made = 0
        now = time.time()
        found: list[rows.Waiting] = await self._run(lambda conn: rows.waiting(conn, now))
        for waiting in found:
            deployment = self._deployments.get(waiting.deployment_key)
            if deployment is None:
                continue  # a deployment no longer batched here: another config's worker packs it
            # full batches go now; a part-filled one once its oldest item waited long enough
            limit = self._limit(deployment)
            batches = -(-waiting.items // limit)
            if now - waiting.oldest < self.settings.wait_s:
                batches = waiting.items // limit
            for _ in range(batches):
                if not await self._pack(deployment):
                    break
                made += 1
        return made

    def _limit(self, deployment: DeploymentConfig) -> int:
        most = self._apis[deployment.provider].limits.max_requests
        return min(most, self.settings.max_items or most)

    async def _pack(self, deployment: DeploymentConfig) -> bool:
        api = self._apis[deployment.provider]
        limit = self._limit(deployment)
        now = time.time()
        items: list[rows.Item] = await self._run(
            lambda conn: rows.take_pending(
                conn, deployment.key, limit, self._owner, PACK_LEASE_S, now
            )
        )
        items = await self._drop_cancelled(items)
        if not items:
            return False
        chosen = _within_bytes(items, api.limits.max_bytes)
        rest = items[len(chosen) :]
        if rest:
            await self._run(lambda conn: rows.release_packing(conn, rest, self._owner))
        try:
            batch_id = await api.submit(
                [item.line.encode() for item in chosen], embeddings=chosen[0].kind == "embedding"
            )
        except Exception as error:
            log.warning("batch submission to %s failed: %s", deployment.key, error)
            await self._run(lambda conn: rows.release_packing(conn, chosen, self._owner))
            return False
        # a crash right here leaves the provider batch unrecorded: its items are packed again
        # when the packing lease lapses (the first batch's results are never read)
        await self._run(
            lambda conn: rows.submitted(
                conn, batch_id, deployment.key, chosen, self._owner, time.time()
            )
        )
        self.submissions += 1
        log.info("submitted %d jobs to %s as batch %s", len(chosen), deployment.key, batch_id)
        return True

    async def _drop_cancelled(self, items: list[rows.Item]) -> list[rows.Item]:
        """Items cancelled while they waited end ``cancelled`` here (not yet sent: nothing
        paid); the rest are returned."""
        cancelled: list[rows.Item] = []
        rest: list[rows.Item] = []
        for item in items:
            (cancelled if self._is_cancelled(item) else rest).append(item)
        for item in cancelled:
            who = identity(json.loads(item.who_json))
            await self._settlement.end(who, CANCELLED, item.topic, claimed=True)
        if cancelled:
            keys = [(item.tenant, item.job_id) for item in cancelled]
            await self._run(lambda conn: rows.items_done(conn, keys))
        return rest

    def _is_cancelled(self, item: rows.Item) -> bool:
        batch_id = json.loads(item.who_json).get("batch_id")
        return self._cancellations.is_cancelled(item.tenant, item.job_id, batch_id)

    async def _sweep_overdue(self) -> None:
        before = time.time() + self.settings.margin_s
        while True:
            items: list[rows.Item] = await self._run(
                lambda conn: rows.take_overdue(conn, before, SETTLE_CHUNK)
            )
            if not items:
                return
            log.info("%d batch-lane jobs near their deadline go back online", len(items))
            await self._settler.back_online(items)

    # -- polling ------------------------------------------------------------------------------

    async def poll_once(self) -> bool:
        """Look at one submission that is due a look; True when one was looked at."""
        due: tuple[str, str] | None = await self._run(
            lambda conn: rows.take_due_batch(conn, self._owner, POLL_LEASE_S, time.time())
        )
        if due is None:
            return False
        batch_id, key = due
        deployment = self._deployments.get(key)
        if deployment is None:
            return True  # not batched in this worker's config: its lease lapses to another
        try:
            ended = await self._look(batch_id, deployment)
        except Exception:  # the provider or the ledger away: look again soon, not in 5 min
            await self._look_again(batch_id)
            raise
        if not ended:
            await self._look_again(batch_id)
        return True

    async def _look_again(self, batch_id: str) -> None:
        next_look = time.time() + self.settings.poll_every_s
        await self._run(lambda conn: rows.look_again(conn, batch_id, self._owner, next_look))

    async def _look(self, batch_id: str, deployment: DeploymentConfig) -> bool:
        """Settle the submission's items if it has ended (True). Items settle one by one and
        are marked done as they are, so a look that fails part-way publishes nothing twice
        when it is made again; the submission ends once every item is settled."""
        api = self._apis[deployment.provider]
        try:
            state = await api.state(batch_id)
        except ProviderBadRequest as error:  # the provider no longer knows it (404): its jobs
            log.warning("batch %s refused (%s): its jobs go online", batch_id, error)
            state = BatchState(ended=True, failed=str(error))
        if not state.ended:
            return False
        items: list[rows.Item] = await self._run(lambda conn: rows.items_of(conn, batch_id))
        outcomes = await self._outcomes(api, batch_id, items, deployment, state.failed)
        for start in range(0, len(items), SETTLE_CHUNK):
            await self._settler.settle(
                [
                    (item, outcomes.get(item.custom_id))
                    for item in items[start : start + SETTLE_CHUNK]
                ],
                deployment,
            )
        await self._run(lambda conn: rows.batch_ended(conn, batch_id, time.time()))
        log.info("batch %s of %s ended: %d jobs", batch_id, deployment.key, len(items))
        return True

    async def _outcomes(
        self,
        api: BatchAPI,
        batch_id: str,
        items: list[rows.Item],
        deployment: DeploymentConfig,
        failed: str | None,
    ) -> dict[str, Outcome]:
        """The items' outcomes by ``custom_id`` (none: they go back online) — none when the
        batch failed as a whole, or when its results are refused for good (any other failure
        raises: the submission is looked at again)."""
        if failed is not None:
            return {}
        calls: dict[str, Call] = {}
        for item in items:
            try:
                calls[item.custom_id] = call_of(item, deployment)
            except Exception as error:  # its stored job no longer reads: it goes online
                log.warning("batch item %s/%s unreadable: %r", item.tenant, item.job_id, error)
        try:
            return {o.custom_id: o for o in await api.results(batch_id, calls)}
        except ProviderBadRequest as error:  # refused for good (another error: looked again)
            log.warning("results of batch %s refused (%s): its jobs go online", batch_id, error)
            return {}

    async def run_forever(self) -> None:
        async def packing() -> None:
            while True:
                await asyncio.sleep(self.settings.pack_every_s)
                try:
                    await self.pack_once()
                except Exception as error:
                    log.warning("batch packing failed: %s", error)

        async def polling() -> None:
            while True:
                await asyncio.sleep(self.settings.poll_every_s)
                try:
                    while await self.poll_once():
                        pass
                except Exception as error:
                    log.warning("batch polling failed: %s", error)

        await asyncio.gather(packing(), polling())


def _within_bytes(items: list[rows.Item], max_bytes: int) -> list[rows.Item]:
    chosen: list[rows.Item] = []
    size = 0
    for item in items:
        size += len(item.line.encode()) + 1
        if size > max_bytes and chosen:
            break
        chosen.append(item)
    return chosen
