"""Who may do what: known tenants, allowed routes, reply topics, signed jobs.

A tenant with ``signing_secret_env`` accepts only jobs whose ``headway-signature`` header is
``v1=<hex HMAC-SHA256 of the exact value bytes>`` under that secret, compared in constant time.
Secrets are read from the environment once, when the worker starts (a missing variable stops
it with the key named), and never appear in a message, a result or a log line: a rejection says
*that* the signature is missing or wrong, never what it should have been.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from broker.config import DEFAULT_TENANT, HeadwayConfig, TenantConfig
from broker.errors import ConfigError
from broker.headers import RecordHeaders, header_bytes
from broker.topics import HEADER_SIGNATURE
from schemas.jobs import JobRequest
from schemas.results import ErrorCode
from workers.audit.facts import key_id

SIGNATURE_SCHEME = "v1="


@dataclass(frozen=True, slots=True)
class Rejection:
    code: ErrorCode
    message: str
    #: the record could not be told to come from the tenant it names (an unknown tenant, a
    #: missing or wrong signature): its result is published, never stored under the tenant's
    #: identity, and never sent to the reply topic it asks for
    unauthenticated: bool = False


def _forbidden(message: str) -> Rejection:
    return Rejection(ErrorCode.FORBIDDEN, message)


def _unauthenticated(message: str) -> Rejection:
    return Rejection(ErrorCode.FORBIDDEN, message, unauthenticated=True)


class AccessControl:
    def __init__(self, config: HeadwayConfig, environ: Mapping[str, str] = os.environ) -> None:
        self._config = config
        self._secrets: dict[str, bytes] = {}
        #: tenant entry → its signing key's id (the audit trail's "signed by")
        self.key_ids: dict[str, str] = {}
        for name, tenant in config.tenants.items():
            variable = tenant.signing_secret_env
            if variable is None:
                continue
            secret = environ.get(variable)
            if not secret:
                raise ConfigError(
                    f"tenants.{name}.signing_secret_env: environment variable {variable} is not set"
                )
            self._secrets[name] = secret.encode()
            self.key_ids[name] = key_id(variable, self._secrets[name])

    def check(
        self,
        job: JobRequest,
        tenant: TenantConfig | None,
        value: bytes,
        headers: RecordHeaders,
    ) -> Rejection | None:
        """None when the job may run; else why not."""
        refused = self.authenticate(job.tenant, tenant, value, headers)
        if refused is not None or tenant is None:  # (an unknown tenant is refused)
            return refused
        if tenant.allowed_routes is not None and job.route not in tenant.allowed_routes:
            return _forbidden(f"route: tenant '{job.tenant}' may not use '{job.route}'")
        if job.reply_topic and not any(
            fnmatchcase(job.reply_topic, pattern) for pattern in tenant.reply_topics
        ):
            return _forbidden(
                f"reply_topic: '{job.reply_topic}' is not in tenant '{job.tenant}' reply_topics"
            )
        return None

    def authenticate(
        self, name: str, tenant: TenantConfig | None, value: bytes, headers: RecordHeaders
    ) -> Rejection | None:
        """None when the record may act as tenant ``name`` (a known tenant, signed by it when
        it signs); else why not (an unauthenticated rejection)."""
        if tenant is None:
            return _unauthenticated(f"tenant: unknown tenant '{name}'")
        entry = name if name in self._config.tenants else DEFAULT_TENANT
        secret = self._secrets.get(entry)
        if secret is None:
            return None
        given = header_bytes(headers, HEADER_SIGNATURE)
        if given is None:
            return _unauthenticated(f"signature: tenant '{name}' requires a signed job")
        expected = (SIGNATURE_SCHEME + hmac.new(secret, value, hashlib.sha256).hexdigest()).encode()
        if not hmac.compare_digest(given, expected):
            return _unauthenticated("signature: does not match the job's bytes")
        return None
