"""One budget alert POSTed to its tenant's webhook: signed, bounded in time, retried.

``deliveries.py`` hands each published alert of a tenant with an ``alert_webhook_url``
here: a ``POST`` of the AlertEvent's JSON with the Standard Webhooks headers — ``webhook-id``
(the alert's ``event_id``, the same on every attempt and every redelivery), ``webhook-timestamp``
(the attempt's Unix time) and, when the tenant names a secret, ``webhook-signature: v1,<base64
HMAC-SHA256 of "id.timestamp.body">``, so a receiver can refuse a replayed request by its age —
and, as before, ``x-headway-signature: sha256=<hex HMAC-SHA256 of the body>``. Both are keyed by
the secret's bytes. Each attempt is bounded as a whole (resolving, connecting, sending, the
answer's status line) by the timeout; timeouts, connection errors, 429 and 5xx are retried
(tenacity, three attempts, backing off) and then left for a later round; any other 4xx, or a
redirect (never followed), is the receiver refusing the alert: logged, not retried. Where the
request may go is ``addresses.py``'s and ``transport.py``'s.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import httpx
from standardwebhooks.webhooks import Webhook
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from broker.config import HeadwayConfig
from broker.errors import ConfigError
from workers.admission.webhooks.addresses import HOW_TO_ALLOW, AddressRefused, literal_refusal
from workers.admission.webhooks.transport import ALLOW_PRIVATE

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-headway-signature"
ATTEMPTS = 3
TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    secret: bytes | None
    allow_private: bool = False  # the operator lets this receiver be in a refused range


class Outcome(StrEnum):
    DELIVERED = "delivered"
    REFUSED = "refused"  # the receiver said no for good (4xx, a redirect): not tried again
    UNREACHED = "unreached"  # timeouts, connection errors, 429, 5xx: tried again later
    BLOCKED = "blocked"  # the URL's host is, or resolves to, a refused address


@dataclass(frozen=True, slots=True)
class Delivery:
    outcome: Outcome
    detail: str = ""

    @property
    def settled(self) -> bool:
        """Whether the alert is done with: delivered, or refused by its receiver."""
        return self.outcome in (Outcome.DELIVERED, Outcome.REFUSED)


class _Retryable(Exception):
    """The receiver asked to be tried again (429, 5xx)."""


def signature(secret: bytes, body: bytes) -> str:
    """``x-headway-signature``: the body's HMAC alone (kept for receivers that check it)."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signed_headers(event_id: str, body: bytes, secret: bytes | None, at: float) -> dict[str, str]:
    """The headers of one attempt at ``at`` (Unix time): Standard Webhooks' and headway's."""
    stamp = int(at)
    headers = {
        "content-type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(stamp),
    }
    if secret is not None:
        sent_at = datetime.fromtimestamp(stamp, UTC)
        headers["webhook-signature"] = Webhook(secret).sign(event_id, sent_at, body.decode())
        headers[SIGNATURE_HEADER] = signature(secret, body)
    return headers


def targets(
    config: HeadwayConfig, environ: Mapping[str, str], allow_private: bool = False
) -> dict[str, Target]:
    """Each tenant's webhook (the composition root reads the secrets from the environment);
    a URL whose host is a refused IP address is a config error unless allowed."""
    found = {}
    for name, tenant in config.tenants.items():
        if tenant.alert_webhook_url is None:
            continue
        allowed = allow_private or tenant.alert_webhook_allow_private
        reason = None if allowed else literal_refusal(tenant.alert_webhook_url)
        if reason is not None:
            raise ConfigError(f"tenants.{name}.alert_webhook_url: {reason}; {HOW_TO_ALLOW}")
        secret_env = tenant.alert_webhook_secret_env
        secret = environ.get(secret_env) if secret_env else None
        found[name] = Target(tenant.alert_webhook_url, secret.encode() if secret else None, allowed)
    return found


class Webhooks:
    """POSTs one alert to its tenant's receiver (``client``: ``transport.py``'s)."""

    def __init__(
        self,
        targets: dict[str, Target],
        client: httpx.AsyncClient,
        clock: Callable[[], float],
        timeout_s: float = TIMEOUT_S,
        wait_s: float = 0.5,
    ) -> None:
        self._targets = targets
        self._client = client
        self._clock = clock
        self._timeout_s = timeout_s
        self._wait_s = wait_s

    @property
    def tenants(self) -> list[str]:
        return sorted(self._targets)

    async def deliver(self, tenant: str, event_id: str, body: bytes) -> Delivery:
        target = self._targets.get(tenant)
        if target is None:
            return Delivery(Outcome.DELIVERED, "no webhook")
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(ATTEMPTS),
                wait=wait_exponential(multiplier=self._wait_s, max=8 * self._wait_s),
                retry=retry_if_exception_type((httpx.TransportError, _Retryable, TimeoutError)),
                reraise=True,
            ):
                with attempt:
                    status = await self._post(target, event_id, body)
        except AddressRefused as error:
            log.warning("alert webhook of %s not called: %s", tenant, error.reason)
            return Delivery(Outcome.BLOCKED, error.reason)
        except (httpx.TransportError, _Retryable, TimeoutError) as error:
            detail = str(error) or f"no answer within {self._timeout_s:g} s"
            log.warning("alert webhook of %s not reached (tried again later): %s", tenant, detail)
            return Delivery(Outcome.UNREACHED, detail)
        if status >= 300:
            said = "a redirect (not followed)" if status < 400 else "refused"
            log.warning("alert webhook of %s: HTTP %s, %s", tenant, status, said)
            return Delivery(Outcome.REFUSED, f"HTTP {status}")
        return Delivery(Outcome.DELIVERED, f"HTTP {status}")

    async def _post(self, target: Target, event_id: str, body: bytes) -> int:
        """One attempt, signed as of now, bounded as a whole; the answer's body is never
        read (a receiver cannot make the worker hold its reply)."""
        headers = signed_headers(event_id, body, target.secret, self._clock())
        async with asyncio.timeout(self._timeout_s):
            async with self._client.stream(
                "POST",
                target.url,
                content=body,
                headers=headers,
                timeout=self._timeout_s,
                follow_redirects=False,
                extensions={ALLOW_PRIVATE: target.allow_private},
            ) as response:
                status = response.status_code
        if status == 429 or status >= 500:
            raise _Retryable(f"HTTP {status}")
        return status
