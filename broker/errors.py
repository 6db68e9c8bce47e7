"""The one exception tree of headway. Every error headway raises derives from HeadwayError.

    HeadwayError
    ├── ConfigError                  bad config file or settings (names the key, the problem)
    │   └── TopicMissing                 a topic headway needs does not exist on the cluster
    ├── EmbeddedBrokerError          the embedded Kafka-compatible broker cannot start here
    ├── ProducerFailed               the Kafka producer stopped for good (the worker must exit)
    ├── LedgerUnavailable            the database cannot be reached (the job waits for it)
    ├── LedgerRefused                the database refused one job's values (the job is poison)
    ├── SuspendedLedgerWork          a bug: ledger work on SQLite's thread awaited something else
    ├── TemplateError                a prompt template is unknown, malformed, or its variables
    │                                    do not fit (a job: rejected; ``templates push``: refused)
    ├── UnscopedRead                 a read by batch that names no tenant, where the batch id is
    │                                    not exactly one tenant's (batch ids are producers')
    └── ProviderError                a provider call failed (mapped in providers/base.py)
        ├── RetryableProviderError   worth another attempt; carries ``retry_after`` (s) if known
        │   ├── ProviderTimeout          connect/read/write/pool timeout
        │   ├── ProviderConnectionError  refused, reset, DNS
        │   ├── ProviderRateLimited      HTTP 429
        │   ├── ProviderServerError      HTTP 5xx
        │   │   └── ProviderOverloaded       HTTP 529 / 503, Anthropic's overloaded_error
        │   └── DeploymentsUnavailable   no deployment may take a call now (circuits, pauses)
        └── PermanentProviderError   another attempt cannot help
            ├── ProviderBadRequest       HTTP 400/404/409/413/422 …
            ├── ProviderAuthError        HTTP 401/403
            ├── ProviderResponseError    2xx with a body we cannot read
            ├── ProviderContentFiltered  the provider refused the content (a content-policy
            │                                block): another deployment may take it when the
            │                                route's ``failover_on`` says so
            └── ProviderInvalidOutput    the answer failed the job's JSON schema, twice
                └── UncheckableOutput        the schema could not be applied to the answer:
                                                 no other answer is asked for

Job outcomes (rejected, expired, cancelled, failed) are values on a JobResult, not exceptions,
once they leave a worker's internals. Third-party errors (httpx, aiokafka, SQLAlchemy) are
mapped into this tree at one boundary each.
"""

from __future__ import annotations


class HeadwayError(Exception):
    """Root of every error headway raises."""


class ConfigError(HeadwayError):
    """The config file or the settings are invalid."""


class TopicMissing(ConfigError):
    """A topic does not exist (clusters that do not create topics on first use)."""

    def __init__(self, topic: str) -> None:
        super().__init__(f"topic {topic!r} does not exist (run `headway topics create`)")
        self.topic = topic


class EmbeddedBrokerError(HeadwayError):
    """The embedded broker binary is missing for this platform or failed to start."""


class ProducerFailed(HeadwayError):
    """The Kafka producer's sender stopped (fenced, out-of-order sequence, a client bug):
    every record given to it from then on fails, so retrying cannot help."""


class LedgerUnavailable(HeadwayError):
    """The ledger database cannot be reached."""


class LedgerRefused(HeadwayError):
    """The database refused a value of this one operation (a character or a number its
    column cannot hold): retrying cannot help, the database itself is fine."""


class SuspendedLedgerWork(HeadwayError):
    """Ledger work run on the ledger's SQLite thread awaited something other than its
    connection: headway's own bug, never the database's (retrying cannot help)."""


class TemplateError(HeadwayError):
    """The template is unknown, malformed, or its variables do not fit; the message names it."""


class UnscopedRead(HeadwayError):
    """A read by batch (results, status, a subscription) names no tenant and the batch id is
    not exactly one tenant's: producers choose batch ids, so two tenants may share one."""


class ProviderError(HeadwayError):
    """A provider call failed."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retry_after = retry_after
        self.provider = provider

    def __str__(self) -> str:
        prefix = f"HTTP {self.status_code}: " if self.status_code is not None else ""
        return f"{prefix}{self.message}"


class RetryableProviderError(ProviderError):
    retryable = True


class ProviderTimeout(RetryableProviderError):
    pass


class ProviderConnectionError(RetryableProviderError):
    pass


class ProviderRateLimited(RetryableProviderError):
    pass


class ProviderServerError(RetryableProviderError):
    pass


class ProviderOverloaded(ProviderServerError):
    """The provider sheds load: back off this deployment (adaptive concurrency shrinks)."""


class DeploymentsUnavailable(RetryableProviderError):
    """Every deployment of the route refuses calls for now; ``retry_after`` says how long."""


class PermanentProviderError(ProviderError):
    retryable = False


class ProviderBadRequest(PermanentProviderError):
    pass


class ProviderAuthError(PermanentProviderError):
    pass


class ProviderResponseError(PermanentProviderError):
    pass


class ProviderContentFiltered(PermanentProviderError):
    """A content-policy refusal: Azure's ``content_filter`` (an HTTP 400 or a finish reason),
    Anthropic's ``stop_reason = refusal``, Gemini's safety blocks. Never retried on the same
    deployment."""


class ProviderInvalidOutput(PermanentProviderError):
    """The answer did not validate against the job's ``response_format`` — on the call and on
    the one more call the executor makes on the same deployment."""


class UncheckableOutput(ProviderInvalidOutput):
    """The job's schema could not be applied to the answer (references that loop, a check past
    its time budget): the schema's fault, so no other answer is asked for."""
