"""Model provider and model configuration schemas (rest-api #18-#25)."""
from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields

from genai_backend.limits import MAX_KEY_LENGTH
from genai_backend.schemas import Timestamp
from genai_backend.validation import Dict, FieldError, Float, Int, RequestSchema, Str, Uuid, page_size

# Product text, not contract (rest-api #18); served with a trailing newline, stored stripped.
DEFAULT_SYSTEM_PROMPT = """You are a helpful assistant. Answer the user's query; you may use the tools you are given.

First understand the task and break it into atomic substeps, in order.
Tools come in two kinds: atomic tools perform one operation; composite tools perform several
operations in a fixed sequence.

For the current first substep:
1. Prefer a composite tool whose sequence starts with exactly this substep and does not go
   beyond what the user asked for. Never pick a tool that skips the current substep.
2. Otherwise use an atomic tool that performs this substep.
3. Otherwise use no tool.

Repeat with the remaining substeps until the task is done or no tool fits. Never force a tool,
never guess its arguments, and never use a tool only partially.
When no tool is selected, give the final answer, in the language of the user's query.
"""
DEFAULT_PROMPT_STORED = DEFAULT_SYSTEM_PROMPT.strip()

MAX_LAST_MESSAGES = 20


def is_ollama(name: str) -> bool:
    return name.strip().lower() == "ollama"


def api_key_required() -> FieldError:
    return FieldError("value_error", "Value error, 'api_key' must be specified for this provider", {"error": {}})


def _max_last_messages(value: int) -> None:
    if not 0 <= value <= MAX_LAST_MESSAGES:
        raise ValueError("'max_last_messages' value must be 0 ≤ max_last_messages ≤ 20")


def string_credentials(credentials: dict[str, Any]) -> dict[str, str]:
    """Only string values are kept, stripped; the rest is dropped (rest-api #21)."""
    return {key: value.strip() for key, value in credentials.items() if isinstance(value, str)}


# --- requests ------------------------------------------------------------------------------------

class PromptQuerySchema(RequestSchema):
    provider = Str()
    model = Str()


class ProviderCreateSchema(RequestSchema):
    name = Str(required=True, max_length=MAX_KEY_LENGTH)
    api_key = Str(allow_none=True, load_default=None)
    metadata = Dict(load_default=dict)

    def check(self, data: dict[str, Any]) -> None:
        if not is_ollama(data["name"]) and not data.get("api_key"):
            raise api_key_required()


class ProviderPathSchema(RequestSchema):
    provider_name = Str(required=True)


class ProviderUpdateSchema(RequestSchema):
    # Whether a key is required depends on the stored provider: checked in the handler.
    api_key = Str(allow_none=True, load_default=None)
    metadata = Dict(load_default=dict)


class ConfigUpdateSchema(RequestSchema):
    forbid_extra = True

    name = Str(strip=True, max_length=MAX_KEY_LENGTH)
    model = Str(strip=True, max_length=MAX_KEY_LENGTH)
    system_prompt = Str(strip=True)
    temperature = Float()
    credentials = Dict()
    user_prompt = Str(strip=True, allow_none=True)
    max_last_messages = Int(checks=[_max_last_messages])


class ConfigCreateSchema(RequestSchema):
    forbid_extra = True

    name = Str(required=True, strip=True, max_length=MAX_KEY_LENGTH)
    model = Str(required=True, strip=True, max_length=MAX_KEY_LENGTH)
    provider = Str(required=True, strip=True)
    system_prompt = Str(strip=True, load_default=DEFAULT_PROMPT_STORED)
    temperature = Float(load_default=0.7)
    credentials = Dict(load_default=dict)
    user_prompt = Str(strip=True, allow_none=True, load_default="")
    max_last_messages = Int(load_default=5, checks=[_max_last_messages])


class ConfigPathSchema(RequestSchema):
    model_config_id = Uuid(required=True)


class ConfigListQuerySchema(RequestSchema):
    offset = Int(ge=0, load_default=0)
    limit = page_size("items per page")


# --- responses -----------------------------------------------------------------------------------

class PromptSchema(Schema):
    system_prompt = fields.String()


class ProviderSchema(Schema):
    id = fields.UUID()
    api_key = fields.String(allow_none=True, metadata={"description": "opaque ciphertext; null for Ollama"})
    provider = fields.String()
    metadata = fields.Dict()
    created_at = Timestamp()
    updated_at = Timestamp()


class ModelConfigSchema(Schema):
    id = fields.UUID()
    name = fields.String()
    model = fields.String()
    system_prompt = fields.String()
    temperature = fields.Float()
    credentials = fields.Dict(keys=fields.String(), values=fields.String())
    user_prompt = fields.String(allow_none=True)
    max_last_messages = fields.Integer()


class ProviderWithConfigsSchema(Schema):
    api_key = fields.String(allow_none=True)
    provider = fields.String()
    configs = fields.List(fields.Nested(ModelConfigSchema))
    metadata = fields.Dict()
