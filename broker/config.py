"""The TOML config file (CONTRACT §6) loaded into typed, immutable objects.

Secrets never live in the file: a provider names the environment variable that holds its key
(``api_key_env``) and a tenant the one that holds its signing secret (``signing_secret_env``).
Without a config file the built-in development config applies (:func:`development_config`).
"""

from __future__ import annotations

import os
import re
import tomllib
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from broker.capabilities import BY_PROVIDER_TYPE, Feature
from broker.errors import ConfigError
from schemas.jobs import TENANT_PATTERN, JobKind, TopicName

DEFAULT_TENANT = "default"
SIMULATOR_DEFAULT_URL = "http://127.0.0.1:8089/v1"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: a deployment's region, as the operator names it ("eu-west", "us-east-1", "on-prem-fra")
Region = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")]


#: a fraction of a budget (0.8 = 80 %) whose crossing is alerted
AlertThreshold = Annotated[float, Field(gt=0, le=10)]
#: a usage tag: a key of a job's metadata
TagKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class ProviderType(StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"
    AZURE_OPENAI = "azure_openai"
    OPENAI_COMPATIBLE = "openai_compatible"
    SIMULATOR = "simulator"


NO_EMBEDDINGS_API = frozenset({ProviderType.ANTHROPIC})
# Azure OpenAI's batch API (deployment-scoped files under /openai/, api-version) is not
# adapted yet: its deployments run online
BATCH_APIS = frozenset({ProviderType.OPENAI, ProviderType.ANTHROPIC, ProviderType.SIMULATOR})


class Strategy(StrEnum):
    CHEAPEST = "cheapest"
    ORDERED = "ordered"
    WEIGHTED = "weighted"
    FASTEST = "fastest"


class BudgetPeriod(StrEnum):
    DAY = "day"
    MONTH = "month"
    TOTAL = "total"


class OnBudgetExhausted(StrEnum):
    REJECT = "reject"
    DEFER = "defer"


class ProviderConfig(_Frozen):
    type: ProviderType
    base_url: str
    api_key_env: str | None = None
    timeout_s: Annotated[float, Field(gt=0)] = 60.0
    api_version: str | None = None

    def api_key(self) -> str | None:
        """The key from the environment; None when the provider needs none."""
        if self.api_key_env is None:
            return None
        return os.environ.get(self.api_key_env)


class DeploymentConfig(_Frozen):
    provider: str
    model: Annotated[str, Field(min_length=1)]
    input_usd_per_mtok: Annotated[float, Field(ge=0)] = 0.0
    output_usd_per_mtok: Annotated[float, Field(ge=0)] = 0.0
    rpm: Annotated[int, Field(ge=1)] | None = None
    tpm: Annotated[int, Field(ge=1)] | None = None
    weight: Annotated[float, Field(gt=0)] = 1.0
    max_batch_inputs: Annotated[int, Field(ge=1)] | None = None
    batch: bool = False  # the provider's Batch API may serve deadline-tolerant jobs
    batch_input_usd_per_mtok: Annotated[float, Field(ge=0)] | None = None  # default: half
    batch_output_usd_per_mtok: Annotated[float, Field(ge=0)] | None = None
    # what this deployment can take beyond text, narrowing its provider type's row in
    # broker/capabilities.py (None: the whole row)
    capabilities: list[Feature] | None = None
    # where the deployment processes data (free text, e.g. "eu-west"): what a tenant's or a
    # route's allowed_regions are matched against; None = unknown, never inside a restriction
    region: Region | None = None

    @cached_property
    def key(self) -> str:
        """What health, limits and latency are tracked by: ``provider:model``."""
        return f"{self.provider}:{self.model}"

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return (
            input_tokens * self.input_usd_per_mtok + output_tokens * self.output_usd_per_mtok
        ) / 1_000_000

    def batch_cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        """The Batch API's price: as declared, or half the online price."""
        per_in = self.batch_input_usd_per_mtok
        per_out = self.batch_output_usd_per_mtok
        per_in = self.input_usd_per_mtok / 2 if per_in is None else per_in
        per_out = self.output_usd_per_mtok / 2 if per_out is None else per_out
        return (input_tokens * per_in + output_tokens * per_out) / 1_000_000


class CacheScope(StrEnum):
    TENANT = "tenant"  # a tenant's requests hit only its own entries
    GLOBAL = "global"  # every tenant shares the route's entries


class CacheConfig(_Frozen):
    """The route's response cache (an empty ``[routes.NAME.cache]`` table turns it on)."""

    ttl_s: Annotated[float, Field(gt=0)] = 86_400.0
    scope: CacheScope = CacheScope.TENANT
    max_entry_bytes: Annotated[int, Field(ge=1)] = 1024 * 1024  # larger outputs are not kept


class PiiKindName(StrEnum):
    EMAIL = "email"
    PHONE = "phone"
    CARD = "card"
    IBAN = "iban"
    SSN = "ssn"
    IP = "ip"
    SECRET = "secret"


class InjectionAction(StrEnum):
    OFF = "off"
    FLAG = "flag"
    BLOCK = "block"


class GuardrailPolicy(_Frozen):
    """``[guardrails.NAME]``: what a route or tenant naming this policy checks."""

    redact_pii: list[PiiKindName] = Field(default_factory=list)
    restore_pii: bool = False  # put the job's own values back into the output
    block_terms: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    block_patterns: list[str] = Field(default_factory=list)
    scan_output: bool = True  # block terms and patterns in the output too
    injection: InjectionAction = InjectionAction.OFF
    plugins: list[Annotated[str, Field(pattern=r"^[\w.]+:[\w.]+$")]] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)  # passed to each plugin's factory

    @model_validator(mode="after")
    def _patterns_compile(self) -> GuardrailPolicy:
        for index, pattern in enumerate(self.block_patterns):
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"block_patterns.{index}: not a valid regex: {error}") from None
        return self


class TemplateSplit(_Frozen):
    """A share of a route's jobs that use ``template`` without pinning a version."""

    template: Annotated[str, Field(min_length=1, max_length=128)]
    version: Annotated[int, Field(ge=1)]
    weight: Annotated[float, Field(gt=0)] = 1.0


class RouteConfig(_Frozen):
    kind: JobKind
    strategy: Strategy = Strategy.ORDERED
    deployments: Annotated[list[DeploymentConfig], Field(min_length=1)]
    template_split: list[TemplateSplit] = Field(default_factory=list)
    cache: CacheConfig | None = None  # None: no response cache on this route
    prefer_batch: bool = False  # send jobs through a batch deployment whatever their deadline
    guardrails: list[str] = Field(default_factory=list)  # names of [guardrails.NAME] policies
    # refusals that move a job to the next deployment instead of ending it
    failover_on: list[Literal["content_filter"]] = Field(default_factory=list)
    allowed_regions: list[Region] | None = None  # data residency: None = any region

    def split_of(self, template: str) -> list[TemplateSplit]:
        """The versions (and weights) jobs naming ``template`` without a version are split
        across; empty: they get the latest version."""
        return [split for split in self.template_split if split.template == template]

    @model_validator(mode="after")
    def _split_is_for_chat(self) -> RouteConfig:
        if self.template_split and self.kind is not JobKind.CHAT:
            raise ValueError("template_split: only chat routes render templates")
        seen: set[tuple[str, int]] = set()
        for index, split in enumerate(self.template_split):
            if (split.template, split.version) in seen:
                raise ValueError(
                    f"template_split.{index}: {split.template} version {split.version} is "
                    "listed twice"
                )
            seen.add((split.template, split.version))
        return self


class TeamConfig(_Frozen):
    """``[teams.NAME]``: a budget its tenants (``team = "NAME"``) share; a job needs room in
    its tenant's budget and its team's."""

    budget_usd: Annotated[float, Field(ge=0)]
    budget_period: BudgetPeriod = BudgetPeriod.MONTH
    on_budget_exhausted: OnBudgetExhausted = OnBudgetExhausted.REJECT
    budget_alerts: list[AlertThreshold] | None = None  # None: the config's top-level list


class TenantConfig(_Frozen):
    rpm: Annotated[int, Field(ge=1)] | None = None
    tpm: Annotated[int, Field(ge=1)] | None = None
    max_in_flight: Annotated[int, Field(ge=1)] | None = None
    budget_usd: Annotated[float, Field(ge=0)] | None = None
    budget_period: BudgetPeriod = BudgetPeriod.DAY
    on_budget_exhausted: OnBudgetExhausted = OnBudgetExhausted.REJECT
    allowed_routes: list[str] | None = None
    team: str | None = None  # its jobs need room in [teams.NAME]'s budget too
    signing_secret_env: str | None = None
    #: apply a control command (cancel, set_budget) for this tenant only when signed with its
    #: signing secret; require_signed_cancels is its older name, and means the same
    require_signed_control: bool = False
    require_signed_cancels: bool = False
    results_topic: TopicName | None = None
    reply_topics: list[str] = Field(default_factory=list)
    weight: Annotated[float, Field(gt=0)] = 1.0
    guardrails: list[str] = Field(default_factory=list)  # names of [guardrails.NAME] policies
    allowed_regions: list[Region] | None = None  # data residency: None = any region
    usage_tags: list[TagKey] | None = None  # None: the config's top-level usage_tags
    budget_alerts: list[AlertThreshold] | None = None  # None: the config's top-level list
    # budget alerts are POSTed here too (JSON AlertEvent), signed with HMAC-SHA256 under the
    # secret in alert_webhook_secret_env when it is set
    alert_webhook_url: Annotated[str, Field(pattern=r"^https?://")] | None = None
    alert_webhook_secret_env: str | None = None
    # let alert_webhook_url reach loopback, link-local, private, unspecified or multicast
    # addresses (refused by default: workers/admission/webhooks/addresses.py)
    alert_webhook_allow_private: bool = False
    # what the audit trail keeps of a job's prompt and output beside their digests: nothing
    # more, a PII-redacted copy, or the whole text (kept HEADWAY_RETAIN_AUDIT_CAPTURES_D)
    audit_capture: Literal["digest", "redacted", "full"] = "digest"

    @property
    def signed_control(self) -> bool:
        """Whether the tenant applies only signed control commands (either key says so)."""
        return self.require_signed_control or self.require_signed_cancels


class HeadwayConfig(_Frozen):
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)
    teams: dict[str, TeamConfig] = Field(default_factory=dict)
    guardrails: dict[str, GuardrailPolicy] = Field(default_factory=dict)
    # job metadata keys copied into usage events as tags (cost attribution; per tenant too)
    usage_tags: list[TagKey] = Field(default_factory=list)
    # the fractions of a budget whose crossing publishes an AlertEvent (per tenant too)
    budget_alerts: list[AlertThreshold] = Field(default_factory=lambda: [0.5, 0.8, 1.0])

    def secret_env_names(self) -> set[str]:
        """The environment variables holding this config's secrets (to keep out of logs)."""
        names = {p.api_key_env for p in self.providers.values() if p.api_key_env}
        names |= {t.signing_secret_env for t in self.tenants.values() if t.signing_secret_env}
        names |= {
            t.alert_webhook_secret_env for t in self.tenants.values() if t.alert_webhook_secret_env
        }
        return names

    @model_validator(mode="after")
    def _references_resolve(self) -> HeadwayConfig:
        for route_name, route in self.routes.items():
            for index, deployment in enumerate(route.deployments):
                where = f"routes.{route_name}.deployments.{index}.provider"
                provider = self.providers.get(deployment.provider)
                if provider is None:
                    raise ValueError(
                        f"{where}: no provider named {deployment.provider!r} in [providers]"
                    )
                if route.kind is JobKind.EMBEDDING and provider.type in NO_EMBEDDINGS_API:
                    raise ValueError(f"{where}: {provider.type.value} has no embeddings API")
                extra = set(deployment.capabilities or ()) - BY_PROVIDER_TYPE[provider.type]
                if extra:
                    raise ValueError(
                        f"routes.{route_name}.deployments.{index}.capabilities: "
                        f"{provider.type.value} cannot take {sorted(extra)}"
                    )
                if deployment.batch and provider.type not in BATCH_APIS:
                    raise ValueError(
                        f"routes.{route_name}.deployments.{index}.batch: "
                        f"{provider.type.value} has no batch API"
                    )
        owners = [(f"routes.{n}", r.guardrails) for n, r in self.routes.items()]
        owners += [(f"tenants.{n}", t.guardrails) for n, t in self.tenants.items()]
        for where, names in owners:
            for name in names:
                if name not in self.guardrails:
                    raise ValueError(
                        f"{where}.guardrails: no policy named {name!r} in [guardrails]"
                    )
        for team_name in self.teams:
            if not re.match(TENANT_PATTERN, team_name):
                raise ValueError(f"teams.{team_name}: a team name is spelled like a tenant's")
        for tenant_name, tenant in self.tenants.items():
            if not re.match(TENANT_PATTERN, tenant_name):
                raise ValueError(
                    f"tenants.{tenant_name}: a tenant name is 1-64 lowercase letters, digits, "
                    "'.', '_' or '-', starting with a letter or digit"
                )
            for key in ("require_signed_control", "require_signed_cancels"):
                if getattr(tenant, key) and tenant.signing_secret_env is None:
                    raise ValueError(f"tenants.{tenant_name}.{key}: needs signing_secret_env")
            if tenant.team is not None and tenant.team not in self.teams:
                raise ValueError(f"tenants.{tenant_name}.team: no team named {tenant.team!r}")
            for route_name in tenant.allowed_routes or []:
                if route_name not in self.routes:
                    raise ValueError(
                        f"tenants.{tenant_name}.allowed_routes: no route named {route_name!r}"
                    )
        return self

    def account(self, name: str) -> str:
        """Whose quotas, budget and fair share a tenant's jobs count against: its own when
        the config lists it; the one ``default`` account for every tenant ``[tenants.default]``
        serves — so minting tenant names earns no fresh budget, quota or share."""
        if name in self.tenants or DEFAULT_TENANT not in self.tenants:
            return name
        return DEFAULT_TENANT

    def tenant(self, name: str) -> TenantConfig | None:
        """The tenant's settings, the ``default`` tenant's, or None (unknown → rejected)."""
        return self.tenants.get(name) or self.tenants.get(DEFAULT_TENANT)

    def capabilities(self, deployment: DeploymentConfig) -> frozenset[Feature]:
        """What the deployment can take beyond text (broker/capabilities.py)."""
        row = BY_PROVIDER_TYPE[self.providers[deployment.provider].type]
        return row if deployment.capabilities is None else row & set(deployment.capabilities)

    def usage_tags_of(self, name: str) -> list[str]:
        """The metadata keys a tenant's usage events carry as tags."""
        tenant = self.tenant(name)
        if tenant is not None and tenant.usage_tags is not None:
            return tenant.usage_tags
        return self.usage_tags

    def alert_thresholds(self, name: str, scope: str = "tenant") -> list[float]:
        """The alerted fractions of a tenant's budget (and its batches'), or a team's."""
        owner = self.teams.get(name) if scope == "team" else self.tenant(name)
        if owner is not None and owner.budget_alerts is not None:
            return owner.budget_alerts
        return self.budget_alerts

    def weight_of(self, name: str) -> float:
        """The tenant's share weight in its lanes (1 for a tenant the config does not know)."""
        tenant = self.tenant(name)
        return tenant.weight if tenant else 1.0


def _format_validation_error(source: str, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {where or '(top level)'}: {message}")
    return f"{source}: invalid config\n" + "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "config") -> HeadwayConfig:
    try:
        return HeadwayConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(source, error)) from None


def load_config(path: Path | None, *, simulator_url: str = SIMULATOR_DEFAULT_URL) -> HeadwayConfig:
    """Load ``path``; when it is None or does not exist, the built-in development config."""
    if path is None or not path.exists():
        return development_config(simulator_url)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error}") from None
    return parse_config(data, str(path))


def development_config(simulator_url: str = SIMULATOR_DEFAULT_URL) -> HeadwayConfig:
    """The built-in config: the bundled simulator, ``summarize`` and ``embed`` routes,
    a ``demo`` tenant and a permissive ``default`` tenant."""
    return parse_config(
        {
            "providers": {"simulator": {"type": "simulator", "base_url": simulator_url}},
            "routes": {
                "summarize": {
                    "kind": "chat",
                    "strategy": "cheapest",
                    "deployments": [
                        {
                            "provider": "simulator",
                            "model": "sim-chat-mini",
                            "input_usd_per_mtok": 0.15,
                            "output_usd_per_mtok": 0.60,
                        }
                    ],
                },
                "embed": {
                    "kind": "embedding",
                    "strategy": "cheapest",
                    "deployments": [
                        {
                            "provider": "simulator",
                            "model": "sim-embed-small",
                            "input_usd_per_mtok": 0.02,
                            "max_batch_inputs": 256,
                        }
                    ],
                },
            },
            "tenants": {"demo": {}, DEFAULT_TENANT: {}},
        },
        "built-in development config",
    )
