"""The caller's own profile (D12: nobody else's)."""
from __future__ import annotations

from aiohttp import web
from aiohttp_apigami import docs, response_schema

from genai_backend.auth.middleware import MANAGE, READ, USER, USER_ID, auth
from genai_backend.db import POOL, queries
from genai_backend.errors import BadRequestError
from genai_backend.responses import json_response
from genai_backend.schemas.profiles import ProfilePathSchema, ProfileSchema, ProfileUpdateSchema
from genai_backend.schemas.users import DetailSchema
from genai_backend.validation import body, path


class ProfileView(web.View):
    URL_PATH = "/api/profiles/{user_id}"

    @docs(tags=["profiles"], summary="Read your profile")
    @auth(USER, scope=READ)
    @path(ProfilePathSchema)
    @response_schema(ProfileSchema, 200)
    @response_schema(DetailSchema, 400, description="Not your profile, or none")
    async def get(self) -> web.Response:
        user_id = self.request["path"]["user_id"]
        row = None
        if user_id == self.request[USER_ID]:
            row = await queries.get_profile(self.request.app[POOL], user_id=user_id)
        if row is None:
            raise BadRequestError(f"Profile of user '{user_id}' does not exist")
        return json_response(dict(row))

    @docs(tags=["profiles"], summary="Edit your profile")
    @auth(USER, scope=MANAGE)
    @path(ProfilePathSchema)
    @body(ProfileUpdateSchema)
    @response_schema(ProfileSchema, 200)
    @response_schema(DetailSchema, 400, description="Not your profile, or none")
    async def patch(self) -> web.Response:
        user_id = self.request["path"]["user_id"]
        data = self.request["body"]
        row = None
        if user_id == self.request[USER_ID]:
            row = await queries.update_profile(
                self.request.app[POOL], user_id=user_id,
                set_first="first_name" in data, first_name=data.get("first_name"),
                set_last="last_name" in data, last_name=data.get("last_name"))
        if row is None:
            raise BadRequestError(f"Profile with of user with id '{user_id}' was not found")
        return json_response(dict(row))


VIEWS = (ProfileView,)
