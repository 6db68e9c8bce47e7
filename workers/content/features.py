"""A job's requirements: the features its messages and parameters use beyond text, each with
where it is used — what the router checks every deployment's capabilities against
(``broker/capabilities.py``), so that a feature is refused by name, never silently dropped.

Computed once per job, at preparation; a text-only job with no such parameter needs nothing
and costs one pass over its messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.capabilities import Feature
from broker.config import DeploymentConfig, HeadwayConfig
from schemas.jobs import JobRequest, Params
from workers.content import media

#: the most inline bytes each provider type takes: one image, and all of a request's inline
#: data (their published limits; a record's own limit, HEADWAY_MAX_MESSAGE_BYTES, is checked
#: at intake and is usually lower)
MB = 1024 * 1024
IMAGE_BYTES = {"anthropic": 5 * MB}
REQUEST_INLINE_BYTES = {"anthropic": 32 * MB, "gemini": 20 * MB}
DEFAULT_IMAGE_BYTES = 20 * MB

#: parameters that are each a feature of their own (honoured where a provider type has them)
_OWN_FEATURE = {
    feature.value: feature
    for feature in (
        Feature.LOGIT_BIAS,
        Feature.METADATA,
        Feature.STORE,
        Feature.SERVICE_TIER,
        Feature.PREDICTION,
        Feature.VERBOSITY,
        Feature.MODALITIES,
        Feature.WEB_SEARCH_OPTIONS,
        Feature.SAFETY_IDENTIFIER,
        Feature.PROMPT_CACHE_KEY,
        Feature.REASONING_EFFORT,
        Feature.SEED,
        Feature.USER,
    )
}


@dataclass(frozen=True, slots=True)
class Needs:
    """What a deployment must be able to take to be sent the job."""

    features: dict[Feature, str] = field(default_factory=dict)  # feature → where first used
    largest_image: tuple[int, str] | None = None  # inline bytes, where
    inline_bytes: int = 0  # every inline image and file together
    regions: frozenset[str] | None = None  # data residency: the regions allowed (None: any)

    def __bool__(self) -> bool:
        return bool(self.features) or self.regions is not None


NOTHING = Needs()


def allowed_regions(*restrictions: list[str] | None) -> frozenset[str] | None:
    """The regions every restriction allows (a tenant's and a route's ``allowed_regions``);
    None when nothing restricts."""
    allowed: frozenset[str] | None = None
    for restriction in restrictions:
        if restriction is not None:
            names = frozenset(restriction)
            allowed = names if allowed is None else allowed & names
    return allowed


def needs(
    job: JobRequest,
    messages: Iterable[Mapping[str, Any]] | None,
    regions: frozenset[str] | None = None,
) -> Needs:
    found: dict[Feature, str] = {}
    largest: tuple[int, str] | None = None
    inline_bytes = 0
    for index, message in enumerate(messages or ()):
        content = message.get("content")
        if type(content) is str and len(message) == 2:
            continue  # role and text: the common case
        where = f"messages.{index}"
        if message.get("tool_calls") or message.get("role") == "tool":
            found.setdefault(Feature.TOOLS, where)
        if message.get("name") is not None:
            found.setdefault(Feature.MESSAGE_NAMES, f"{where}.name")
        if not isinstance(content, list):
            continue
        for position, part in enumerate(content):
            at = f"{where}.content.{position}"
            if part["type"] == "image_url":
                data = media.inline(part["image_url"]["url"])
                if data is None:
                    found.setdefault(Feature.IMAGE_URL, at)
                    continue
                found.setdefault(Feature.IMAGE_DATA, at)
                inline_bytes += data.size
                if largest is None or data.size > largest[0]:
                    largest = (data.size, at)
            elif part["type"] == "file":
                found.setdefault(Feature.FILE, at)
                data = media.inline(part["file"]["file_data"])
                inline_bytes += data.size if data is not None else 0
    if job.params is not None:
        _parameters(job.params, found)
    if not found and regions is None:
        return NOTHING
    return Needs(found, largest, inline_bytes, regions)


def _parameters(params: Params, found: dict[Feature, str]) -> None:
    for name in params.model_fields_set:
        value = getattr(params, name)
        if value is None:
            continue
        feature = _OWN_FEATURE.get(name)
        if feature is not None:
            found.setdefault(feature, f"params.{name}")
        elif name in ("tools", "tool_choice"):
            found.setdefault(Feature.TOOLS, f"params.{name}")
        elif name == "parallel_tool_calls":
            found.setdefault(Feature.PARALLEL_TOOL_CALLS, "params.parallel_tool_calls")
        elif name in ("presence_penalty", "frequency_penalty"):
            found.setdefault(Feature.PENALTIES, f"params.{name}")
        elif name in ("logprobs", "top_logprobs") and params.logprobs:
            found.setdefault(Feature.LOGPROBS, f"params.{name}")
        elif name == "n" and value > 1:
            found.setdefault(Feature.N, "params.n")
        elif name == "response_format":
            kind = value.get("type")
            if kind == "json_object":
                found.setdefault(Feature.JSON_OBJECT, "params.response_format")
            elif kind == "json_schema":
                found.setdefault(Feature.JSON_SCHEMA, "params.response_format")


def refusal(need: Needs, capabilities: frozenset[Feature], provider_type: str) -> str | None:
    """Why a deployment of this type and capabilities cannot take the job, or None."""
    for feature, where in need.features.items():
        if feature not in capabilities:
            return f"{where}: {feature.value}"
    if need.largest_image is not None:
        size, where = need.largest_image
        bound = IMAGE_BYTES.get(provider_type, DEFAULT_IMAGE_BYTES)
        if size > bound:
            return f"{where}: an inline image of {size} bytes (the limit is {bound})"
    request_bound = REQUEST_INLINE_BYTES.get(provider_type)
    if request_bound is not None and need.inline_bytes > request_bound:
        return f"messages: {need.inline_bytes} bytes inline (the limit is {request_bound})"
    return None


@dataclass(frozen=True, slots=True)
class Unsupported:
    """No deployment of the route can take the job: a part or a parameter
    (``unsupported_feature``), or none is in a region the job may go to
    (``region_unavailable``)."""

    message: str
    code: str = "unsupported_feature"


class Capabilities:
    """Each deployment's capabilities under one config: which jobs it may be sent."""

    def __init__(self, config: HeadwayConfig) -> None:
        self._config = config

    def refusal(self, deployment: DeploymentConfig, need: Needs) -> str | None:
        provider = self._config.providers[deployment.provider]
        return refusal(need, self._config.capabilities(deployment), provider.type)

    def able(
        self, route: str, deployments: Sequence[DeploymentConfig], need: Needs
    ) -> list[DeploymentConfig] | Unsupported:
        """The deployments that can take what the job needs, in their order; none → why the
        first of them cannot."""
        if not need:
            return list(deployments)
        if need.regions is not None:
            inside = [d for d in deployments if d.region in need.regions]
            if not inside:
                return Unsupported(
                    f"region: no deployment of route '{route}' is in the allowed regions "
                    f"{sorted(need.regions)}",
                    "region_unavailable",
                )
            deployments = inside
        able, first = [], None
        for deployment in deployments:
            why = self.refusal(deployment, need)
            if why is None:
                able.append(deployment)
            elif first is None:
                first = why
        if able:
            return able
        return Unsupported(f"{first} — no deployment of route '{route}' takes it")
