"""API keys: create (the key shown once), list, revoke; with a user JWT only, never with a key."""
from __future__ import annotations

import uuid

from aiohttp import web
from aiohttp_apigami import docs, response_schema

from genai_backend.auth import api_keys
from genai_backend.auth.middleware import USER, USER_ID, USER_TOKEN_ONLY, auth
from genai_backend.db import POOL, queries
from genai_backend.errors import ApiError
from genai_backend.responses import json_response, no_content
from genai_backend.schemas.keys import (
    KeyCreatedSchema,
    KeyCreateSchema,
    KeyPathSchema,
    KeySchema,
    canonical_scopes,
    expiry,
)
from genai_backend.schemas.users import DetailSchema
from genai_backend.validation import body, path


class KeyNotFound(ApiError):
    status = 404


class KeysView(web.View):
    URL_PATH = "/api/keys"

    @docs(tags=["keys"], summary="Create an API key: the key is in the answer this once, only its hash is kept")
    @auth(USER, scope=USER_TOKEN_ONLY)
    @body(KeyCreateSchema)
    @response_schema(KeyCreatedSchema, 201, description="The key, in `key` this once")
    @response_schema(DetailSchema, 403, description="Called with an API key: keys cannot create keys")
    async def post(self) -> web.Response:
        data = self.request["body"]
        key = api_keys.new_key()
        row = await queries.create_api_key(
            self.request.app[POOL], key_id=uuid.uuid4(), user_id=self.request[USER_ID], name=data["name"],
            prefix=api_keys.shown_prefix(key), key_hash=api_keys.key_hash(key),
            scopes=canonical_scopes(data["scopes"]), expires_at=expiry(data))
        return json_response({**row, "key": key}, status=201)

    @docs(tags=["keys"], summary="Your API keys, oldest first (no secrets)")
    @auth(USER, scope=USER_TOKEN_ONLY)
    @response_schema(KeySchema(many=True), 200, description="Your keys, without secrets")
    @response_schema(DetailSchema, 403, description="Called with an API key")
    async def get(self) -> web.Response:
        rows = queries.list_api_keys_by_user(self.request.app[POOL], user_id=self.request[USER_ID])
        return json_response([dict(row) async for row in rows])


class KeyView(web.View):
    URL_PATH = "/api/keys/{key_id}"

    @docs(tags=["keys"], summary="Revoke one of your API keys: refused by every process from the next request on",
          responses={204: {"description": "Revoked"}})
    @auth(USER, scope=USER_TOKEN_ONLY)
    @path(KeyPathSchema)
    @response_schema(DetailSchema, 403, description="Called with an API key")
    @response_schema(DetailSchema, 404, description="No such key of yours")
    async def delete(self) -> web.Response:
        key_id = self.request["path"]["key_id"]
        if await queries.delete_api_key(self.request.app[POOL], key_id=key_id, user_id=self.request[USER_ID]) is None:
            raise KeyNotFound(f"API key {key_id} was not found")
        return no_content()


VIEWS = (KeysView, KeyView)
