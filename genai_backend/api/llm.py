"""Model providers (encrypted API keys) and model configurations (rest-api #18-#25)."""
from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp_apigami import docs, response_schema

from genai_backend.auth import secrets
from genai_backend.auth.middleware import USER, USER_ID, auth
from genai_backend.config import SETTINGS
from genai_backend.db import POOL, queries
from genai_backend.errors import BadRequestError, ServerError, ValidationFailed
from genai_backend.responses import json_response, no_content
from genai_backend.schemas.agents import clamp
from genai_backend.schemas.llm import (
    DEFAULT_PROMPT_STORED,
    DEFAULT_SYSTEM_PROMPT,
    ConfigCreateSchema,
    ConfigListQuerySchema,
    ConfigPathSchema,
    ConfigUpdateSchema,
    ModelConfigSchema,
    PromptQuerySchema,
    PromptSchema,
    ProviderCreateSchema,
    ProviderPathSchema,
    ProviderSchema,
    ProviderUpdateSchema,
    ProviderWithConfigsSchema,
    api_key_required,
    is_ollama,
    string_credentials,
)
from genai_backend.schemas.users import DetailSchema
from genai_backend.validation import body, error, path, query

UNEXPECTED = "Unexpected error occured, try again later."
_CONFIG_FIELDS = ("name", "model", "system_prompt", "temperature", "credentials", "user_prompt", "max_last_messages")


def _config_not_found(config_id: uuid.UUID) -> BadRequestError:
    return BadRequestError(f"Config with id '{config_id}' was not found")


class PromptView(web.View):
    URL_PATH = "/api/llm/model/prompt"

    @docs(tags=["llm"], summary="The default system prompt for a new model configuration")
    @auth(USER)
    @query(PromptQuerySchema)
    @response_schema(PromptSchema, 200)
    async def get(self) -> web.Response:
        return json_response({"system_prompt": DEFAULT_SYSTEM_PROMPT})


class ProviderCreateView(web.View):
    URL_PATH = "/api/llm/model/provider"

    @docs(tags=["llm"], summary="Add a model provider; its API key is stored encrypted")
    @auth(USER)
    @body(ProviderCreateSchema)
    @response_schema(ProviderSchema, 200, description="Null values are omitted (no api_key for Ollama)")
    @response_schema(DetailSchema, 400, description="Name taken")
    async def post(self) -> web.Response:
        data = self.request["body"]
        creator_id = self.request[USER_ID]
        api_key = None
        if not is_ollama(data["name"]):
            api_key = await secrets.encrypt(data["api_key"], self.request.app[SETTINGS].secret_key)
        try:
            row = await queries.create_provider(
                self.request.app[POOL], provider_id=uuid.uuid4(), name=data["name"], api_key=api_key,
                metadata=data["metadata"], creator_id=creator_id)
        except asyncpg.UniqueViolationError:
            raise BadRequestError(f"Creator_id, name - '{creator_id}, {data['name']}' already exists") from None
        except asyncpg.PostgresError:
            raise ServerError(UNEXPECTED) from None
        return json_response({key: value for key, value in dict(row).items() if value is not None})


class ProviderView(web.View):
    URL_PATH = "/api/llm/model/providers/{provider_name}"

    @docs(tags=["llm"], summary="Change a provider's API key and metadata")
    @auth(USER)
    @path(ProviderPathSchema)
    @body(ProviderUpdateSchema)
    @response_schema(ProviderSchema, 200)
    @response_schema(DetailSchema, 400, description="No such provider")
    async def patch(self) -> web.Response:
        name = self.request["path"]["provider_name"]
        data = self.request["body"]
        pool, secret = self.request.app[POOL], self.request.app[SETTINGS].secret_key
        provider = await queries.get_provider_by_name(pool, creator_id=self.request[USER_ID], name=name)
        if provider is None:
            raise BadRequestError(f"Provider named '{name}' does not exist")
        api_key: str | None = None
        if not is_ollama(provider["name"]):
            api_key = data["api_key"]
            if not api_key:
                err = api_key_required()
                raise ValidationFailed([error(err.type, ("body",), err.msg, await self.request.json(), err.ctx)])
            # The front-end sends back the opaque value it was given when the key was not edited (D17).
            if not await secrets.is_ours(api_key, self.request.app[SETTINGS].secret_keys):
                api_key = await secrets.encrypt(api_key, secret)
        row = await queries.update_provider(pool, provider_id=provider["id"], creator_id=self.request[USER_ID],
                                            api_key=api_key, metadata=data["metadata"])
        if row is None:
            raise BadRequestError(f"Provider named '{name}' does not exist")
        return json_response(dict(row))


class ConfigCreateView(web.View):
    URL_PATH = "/api/llm/model/config"

    @docs(tags=["llm"], summary="Add a model configuration to one of your providers")
    @auth(USER)
    @body(ConfigCreateSchema)
    @response_schema(ProviderWithConfigsSchema(many=True), 200, description="The provider, configs newest first")
    @response_schema(DetailSchema, 400, description="No such provider, or name taken")
    async def post(self) -> web.Response:
        data = self.request["body"]
        creator_id, pool = self.request[USER_ID], self.request.app[POOL]
        try:
            provider_id = await queries.create_config(
                pool, config_id=uuid.uuid4(), creator_id=creator_id, provider=data["provider"], name=data["name"],
                model=data["model"], system_prompt=data["system_prompt"], temperature=data["temperature"],
                credentials=string_credentials(data["credentials"]), user_prompt=data["user_prompt"],
                max_last_messages=data["max_last_messages"])
        except asyncpg.UniqueViolationError:
            raise BadRequestError(f"Config named '{data['name']}' already exists") from None
        if provider_id is None:
            raise BadRequestError(f"Provider named {data['provider']} does not exist")
        row = await queries.get_provider_with_configs(pool, creator_id=creator_id, provider_id=provider_id["provider_id"],
                                                      default_prompt=DEFAULT_PROMPT_STORED)
        return json_response([dict(row)] if row is not None else [])


class ConfigsView(web.View):
    URL_PATH = "/api/llm/model/configs"

    @docs(tags=["llm"], summary="Your providers (newest first), each with its configurations")
    @auth(USER)
    @query(ConfigListQuerySchema)
    @response_schema(ProviderWithConfigsSchema(many=True), 200)
    async def get(self) -> web.Response:
        q = self.request["query"]
        rows = queries.list_providers_with_configs(
            self.request.app[POOL], creator_id=self.request[USER_ID], offset=clamp(q["offset"]),
            limit=clamp(q["limit"]), default_prompt=DEFAULT_PROMPT_STORED)
        return json_response([dict(row) async for row in rows])


class ConfigView(web.View):
    URL_PATH = "/api/llm/model/config/{model_config_id}"

    @docs(tags=["llm"], summary="One configuration, inside its provider")
    @auth(USER)
    @path(ConfigPathSchema)
    @response_schema(ProviderWithConfigsSchema, 200)
    @response_schema(DetailSchema, 400, description="Not found")
    async def get(self) -> web.Response:
        config_id = self.request["path"]["model_config_id"]
        row = await queries.get_config_with_provider(self.request.app[POOL], creator_id=self.request[USER_ID],
                                                     config_id=config_id, default_prompt=DEFAULT_PROMPT_STORED)
        if row is None:
            raise _config_not_found(config_id)
        return json_response(dict(row))

    @docs(tags=["llm"], summary="Change the fields sent; the others keep their values")
    @auth(USER)
    @path(ConfigPathSchema)
    @body(ConfigUpdateSchema)
    @response_schema(ModelConfigSchema, 200)
    @response_schema(DetailSchema, 400, description="Not found, or name taken")
    async def patch(self) -> web.Response:
        config_id = self.request["path"]["model_config_id"]
        data: dict[str, Any] = dict(self.request["body"])
        if "credentials" in data:
            data["credentials"] = string_credentials(data["credentials"])
        changes = {key: data.get(key) for key in _CONFIG_FIELDS}
        flags = {f"set_{key}": key in data for key in _CONFIG_FIELDS}
        try:
            row = await queries.update_config(self.request.app[POOL], creator_id=self.request[USER_ID],
                                              config_id=config_id, default_prompt=DEFAULT_PROMPT_STORED,
                                              **changes, **flags)
        except asyncpg.UniqueViolationError:
            raise BadRequestError(f"Config named '{data['name']}' already exists") from None
        if row is None:
            raise _config_not_found(config_id)
        return json_response(dict(row))

    @docs(tags=["llm"], summary="Delete a configuration")
    @auth(USER)
    @path(ConfigPathSchema)
    @response_schema(DetailSchema, 400, description="Not found")
    async def delete(self) -> web.Response:
        config_id = self.request["path"]["model_config_id"]
        if await queries.delete_config(self.request.app[POOL], creator_id=self.request[USER_ID],
                                       config_id=config_id) is None:
            raise _config_not_found(config_id)
        return no_content()


VIEWS = (PromptView, ProviderCreateView, ProviderView, ConfigCreateView, ConfigsView, ConfigView)
