"""Registration, login (OAuth2 password flow) and token validation."""
from __future__ import annotations

import uuid

import asyncpg
from aiohttp import web
from aiohttp_apigami import docs, response_schema

from genai_backend.auth import tokens
from genai_backend.auth.passwords import DUMMY_HASH, HashQueueFull, hash_password, verify_password
from genai_backend.config import SETTINGS
from genai_backend.db import POOL, queries
from genai_backend.errors import BadRequestError, ServiceUnavailableError
from genai_backend.observability import metrics
from genai_backend.quotas import BLOCKS, TooManyRequests, client_address
from genai_backend.responses import json_response
from genai_backend.schemas.users import (
    DetailSchema,
    LoginSchema,
    TokenSchema,
    TokenValidateSchema,
    UserCreateSchema,
    UserSchema,
    normalize_username,
)
from genai_backend.validation import body, form

USER_FIELDS = ("id", "username", "created_at", "updated_at")
TOO_MANY_LOGINS = "Too many login attempts. Try again later"
TOO_MANY_REGISTRATIONS = "Too many registrations from this address. Try again later"
HASHERS_BUSY = "Too many logins in progress. Try again in a moment"


def _busy() -> ServiceUnavailableError:
    return ServiceUnavailableError(HASHERS_BUSY, headers={"Retry-After": "1"})


class RegisterView(web.View):
    URL_PATH = "/api/register"

    @docs(tags=["users"], summary="Register a user")
    @body(UserCreateSchema)
    @response_schema(UserSchema, 200)
    @response_schema(DetailSchema, 400, description="Username taken")
    @response_schema(DetailSchema, 429, description="Too many registrations from this address (see Retry-After)")
    @response_schema(DetailSchema, 503, description="Too many password hashes waiting (see Retry-After)")
    async def post(self) -> web.Response:
        data = self.request["body"]
        settings, pool = self.request.app[SETTINGS], self.request.app[POOL]
        address = client_address(self.request)
        if settings.register_max_per_address:
            retry_after = await queries.count_registration(pool, address=address,
                                                           max_attempts=settings.register_max_per_address,
                                                           window_seconds=settings.register_throttle_window)
            if retry_after is not None:
                raise TooManyRequests(TOO_MANY_REGISTRATIONS, retry_after)
        username = normalize_username(data["username"])
        try:
            password = await hash_password(data["password"], key=address)
        except HashQueueFull:
            raise _busy() from None
        user_id = uuid.uuid4()
        try:
            async with pool.acquire() as conn, conn.transaction():
                user = await queries.create_user(conn, user_id=user_id, username=username, password=password)
                await queries.create_profile(conn, profile_id=uuid.uuid4(), user_id=user_id)
        except asyncpg.UniqueViolationError:
            # Also when only the normalised forms are equal (the username_keys trigger).
            raise BadRequestError(f"User '{username}' already exists") from None
        # Never the hash (D10).
        return json_response({key: user[key] for key in USER_FIELDS})


class LoginView(web.View):
    URL_PATH = "/api/login/access-token"

    @docs(tags=["users"], summary="Log in (OAuth2 password flow)")
    @form(LoginSchema)
    @response_schema(TokenSchema, 200)
    @response_schema(DetailSchema, 400, description="Incorrect username or password")
    @response_schema(DetailSchema, 429, description="Too many attempts for this account or from this address "
                                                     "(see Retry-After)")
    @response_schema(DetailSchema, 503, description="Too many password hashes waiting (see Retry-After)")
    async def post(self) -> web.Response:
        data = self.request["form"]
        settings, pool = self.request.app[SETTINGS], self.request.app[POOL]
        account, address = normalize_username(data["username"]), client_address(self.request)
        blocks = self.request.app[BLOCKS]
        keys = ("account", account), ("address", address)
        if wait := blocks.remaining(*keys):
            metrics.login_attempt("throttled")
            raise TooManyRequests(TOO_MANY_LOGINS, wait)
        # Every attempt is counted before the hash (a burst cannot all slip in before the first
        # failure is recorded); a success takes its own count back.
        row = await queries.start_login(pool, username=data["username"], account=account, address=address,
                                        max_account=settings.login_max_failures_per_account or 2**31 - 1,
                                        max_address=settings.login_max_failures_per_address or 2**31 - 1,
                                        window_seconds=settings.login_throttle_window)
        retry = [(key, row[f"{key[0]}_retry_after"]) for key in keys if row[f"{key[0]}_retry_after"] is not None]
        if retry:
            for key, seconds in retry:
                blocks.block(key, seconds)
            metrics.login_attempt("throttled")
            raise TooManyRequests(TOO_MANY_LOGINS, max(seconds for _, seconds in retry))
        # Verify against a dummy hash for unknown users, so timing does not reveal who exists.
        try:
            ok = await verify_password(data["password"], row["password"] or DUMMY_HASH, key=account)
        except HashQueueFull:
            metrics.login_attempt("busy")
            raise _busy() from None
        if row["id"] is None or not ok:
            metrics.login_attempt("failure")
            raise BadRequestError("Incorrect username or password")
        await queries.finish_login(pool, account=account, address=address)
        token = tokens.issue_user_token(row["id"], self.request.app[SETTINGS].secret_key)
        metrics.login_attempt("success")
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
