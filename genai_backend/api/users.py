"""Registration, login (OAuth2 password flow) and token validation."""
from __future__ import annotations

import uuid

import asyncpg
from aiohttp import web
from aiohttp_apigami import docs, response_schema

from genai_backend.auth import tokens
from genai_backend.auth.passwords import DUMMY_HASH, hash_password, verify_password
from genai_backend.config import SETTINGS
from genai_backend.db import POOL, queries
from genai_backend.errors import BadRequestError
from genai_backend.responses import json_response
from genai_backend.schemas.users import (
    DetailSchema,
    LoginSchema,
    TokenSchema,
    TokenValidateSchema,
    UserCreateSchema,
    UserSchema,
)
from genai_backend.validation import body, form

USER_FIELDS = ("id", "username", "created_at", "updated_at")


class RegisterView(web.View):
    URL_PATH = "/api/register"

    @docs(tags=["users"], summary="Register a user")
    @body(UserCreateSchema)
    @response_schema(UserSchema, 200)
    @response_schema(DetailSchema, 400, description="Username taken")
    async def post(self) -> web.Response:
        data = self.request["body"]
        password = await hash_password(data["password"])
        pool = self.request.app[POOL]
        user_id = uuid.uuid4()
        try:
            async with pool.acquire() as conn, conn.transaction():
                user = await queries.create_user(conn, user_id=user_id, username=data["username"], password=password)
                await queries.create_profile(conn, profile_id=uuid.uuid4(), user_id=user_id)
        except asyncpg.UniqueViolationError:
            raise BadRequestError(f"User '{data['username']}' already exists") from None
        # Never the hash (D10).
        return json_response({key: user[key] for key in USER_FIELDS})


class LoginView(web.View):
    URL_PATH = "/api/login/access-token"

    @docs(tags=["users"], summary="Log in (OAuth2 password flow)")
    @form(LoginSchema)
    @response_schema(TokenSchema, 200)
    @response_schema(DetailSchema, 400, description="Incorrect username or password")
    async def post(self) -> web.Response:
        data = self.request["form"]
        row = await queries.get_user_credentials(self.request.app[POOL], username=data["username"])
        # Verify against a dummy hash for unknown users, so timing does not reveal who exists.
        ok = await verify_password(data["password"], row["password"] if row else DUMMY_HASH)
        if row is None or not ok:
            raise BadRequestError("Incorrect username or password")
        token = tokens.issue_user_token(row["id"], self.request.app[SETTINGS].secret_key)
        return json_response({"access_token": token, "refresh_token": None, "token_type": "Bearer"})


class ValidateTokenView(web.View):
    URL_PATH = "/api/validate-token"

    @docs(tags=["users"], summary="Check a user token")
    @body(TokenValidateSchema)
    @response_schema(DetailSchema, 200)
    @response_schema(DetailSchema, 400, description="Invalid or expired")
    async def post(self) -> web.Response:
        token = self.request["body"]["token"]
        try:
            claims = tokens.decode(token, self.request.app[SETTINGS].secret_keys)
        except tokens.InvalidToken:
            claims = None
        if claims is None or claims.is_agent or not await queries.user_exists(self.request.app[POOL], user_id=claims.sub):
            raise BadRequestError("Token is invalid or expired. Please log in again")
        return json_response({"detail": "Token is valid"})


VIEWS = (RegisterView, LoginView, ValidateTokenView)
