"""Budget alerts delivered to tenants' webhooks: a JSON POST per alert, never on a job's path.

The worker holding the alerts lease delivers each alert once it is on the alerts topic
(``budget_alerts.py``): ``POST`` of the AlertEvent's JSON, signed ``x-headway-signature:
sha256=<hex HMAC of the body>`` when the tenant names a secret. Timeouts, connection errors, 429
and 5xx are retried (tenacity, three attempts, backing off); an alert still undelivered is tried
again on the next round. Any other 4xx is the receiver refusing it: logged, not retried.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from broker.config import HeadwayConfig

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-headway-signature"
ATTEMPTS = 3
TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    secret: bytes | None


class _Retryable(Exception):
    """The receiver asked to be tried again (429, 5xx)."""


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def targets(config: HeadwayConfig, environ: Mapping[str, str]) -> dict[str, Target]:
    """Each tenant's webhook (the composition root reads the secrets from the environment)."""
    found = {}
    for name, tenant in config.tenants.items():
        if tenant.alert_webhook_url is None:
            continue
        secret_env = tenant.alert_webhook_secret_env
        secret = environ.get(secret_env) if secret_env else None
        found[name] = Target(tenant.alert_webhook_url, secret.encode() if secret else None)
    return found


class Webhooks:
    def __init__(
        self, targets: dict[str, Target], client: httpx.AsyncClient, wait_s: float = 0.5
    ) -> None:
        self._targets = targets
        self._client = client
        self._wait_s = wait_s

    @property
    def tenants(self) -> list[str]:
        return sorted(self._targets)

    async def deliver(self, tenant: str, body: bytes) -> bool:
        """True once the alert is delivered (or refused for good by its receiver)."""
        target = self._targets.get(tenant)
        if target is None:
            return True
        headers = {"content-type": "application/json"}
        if target.secret is not None:
            headers[SIGNATURE_HEADER] = signature(target.secret, body)
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(ATTEMPTS),
                wait=wait_exponential(multiplier=self._wait_s, max=8 * self._wait_s),
                retry=retry_if_exception_type((httpx.TransportError, _Retryable)),
                reraise=True,
            ):
                with attempt:
                    response = await self._client.post(
                        target.url, content=body, headers=headers, timeout=TIMEOUT_S
                    )
                    if response.status_code == 429 or response.status_code >= 500:
                        raise _Retryable(f"HTTP {response.status_code}")
        except (httpx.TransportError, _Retryable) as error:
            log.warning("alert webhook of %s not reached (again next round): %s", tenant, error)
            return False
        if response.status_code >= 400:
            log.warning(
                "alert webhook of %s refused an alert: HTTP %s", tenant, response.status_code
            )
        return True
