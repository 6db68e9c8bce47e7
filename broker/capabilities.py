"""What each provider type can take beyond text — the one table the router, the config and
the README's feature matrix read.

A job's *requirements* (``workers/content/features.py``) are the features its messages and
parameters use; a deployment's *capabilities* are its provider type's row below, narrowed by
the deployment's own ``capabilities = [...]`` (a text-only model behind an OpenAI-compatible
server). A deployment lacking one of a job's requirements is never sent the job: a feature is
never silently dropped. Plain text and the parameters every type honours (``max_tokens`` /
``max_completion_tokens``, ``temperature``, ``top_p``, ``stop``) need nothing.
"""

from __future__ import annotations

from enum import StrEnum


class Feature(StrEnum):
    IMAGE_URL = "image_url"  # an image by https URL (the provider fetches it)
    IMAGE_DATA = "image_data"  # an image inline, as a data URL
    FILE = "file"  # a document inline (PDF)
    TOOLS = "tools"  # tools, tool_choice, assistant tool calls and tool messages
    PARALLEL_TOOL_CALLS = "parallel_tool_calls"  # the setting itself
    JSON_OBJECT = "json_object"
    JSON_SCHEMA = "json_schema"
    N = "n"  # more than one answer
    LOGPROBS = "logprobs"
    SEED = "seed"
    PENALTIES = "penalties"  # presence_penalty, frequency_penalty
    REASONING_EFFORT = "reasoning_effort"
    USER = "user"
    MESSAGE_NAMES = "message_names"  # a message's ``name``
    # OpenAI's own fields, sent unchanged to OpenAI-type providers only
    LOGIT_BIAS = "logit_bias"
    METADATA = "metadata"
    STORE = "store"
    SERVICE_TIER = "service_tier"
    PREDICTION = "prediction"
    VERBOSITY = "verbosity"
    MODALITIES = "modalities"
    WEB_SEARCH_OPTIONS = "web_search_options"
    SAFETY_IDENTIFIER = "safety_identifier"
    PROMPT_CACHE_KEY = "prompt_cache_key"


EVERYTHING = frozenset(Feature)
#: Azure OpenAI's GA API (2024-10-21): OpenAI's shapes, without documents and the fields
#: only OpenAI's own platform has
AZURE = EVERYTHING - {
    Feature.FILE,
    Feature.PREDICTION,
    Feature.VERBOSITY,
    Feature.WEB_SEARCH_OPTIONS,
    Feature.SAFETY_IDENTIFIER,
    Feature.PROMPT_CACHE_KEY,
    Feature.SERVICE_TIER,
}
ANTHROPIC = frozenset(
    {
        Feature.IMAGE_URL,
        Feature.IMAGE_DATA,
        Feature.FILE,
        Feature.TOOLS,
        Feature.PARALLEL_TOOL_CALLS,  # disable_parallel_tool_use
        Feature.JSON_OBJECT,  # a forced tool taking any object
        Feature.JSON_SCHEMA,  # a forced tool whose input schema is the job's
        Feature.USER,  # metadata.user_id
    }
)
GEMINI = frozenset(
    {
        Feature.IMAGE_DATA,  # inline_data (https URLs: Gemini fetches only its own file URIs)
        Feature.FILE,
        Feature.TOOLS,
        Feature.JSON_OBJECT,
        Feature.JSON_SCHEMA,
        Feature.N,  # candidateCount
        Feature.SEED,
        Feature.PENALTIES,
    }
)
#: keyed by ``ProviderType`` values (a StrEnum: its members find these keys)
BY_PROVIDER_TYPE: dict[str, frozenset[Feature]] = {
    "openai": EVERYTHING,
    "openai_compatible": EVERYTHING,  # narrow per deployment: servers differ
    "simulator": EVERYTHING,
    "azure_openai": AZURE,
    "anthropic": ANTHROPIC,
    "gemini": GEMINI,
}
