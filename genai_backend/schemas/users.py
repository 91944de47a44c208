"""Registration, login and token schemas."""
from __future__ import annotations

from marshmallow import Schema, fields

from genai_backend.schemas import Timestamp
from genai_backend.validation import RequestSchema, Str

_SPECIALS = set("$@#%!^&*()-_+={}[]")
# What the 422 texts below mean; the texts themselves are the reference's (contract) and stay.
PASSWORD_RULES = ("At least 8 characters (the 422 says \"longer than 8 symbols\"; 8 is enough), at most 256, "
                  "with at least one special character out of $@#%!^&*()-_+={}[], one upper-case letter, one "
                  "lower-case letter and one digit. Checked in that order; the first rule broken is reported.")


def _password_rules(value: str) -> None:
    # The reference's rules and texts, checked in this order (rest-api #3).
    if len(value) < 8:
        raise ValueError("Password must be longer than 8 symbols")
    if not any(ch in _SPECIALS for ch in value):
        raise ValueError("Password must contain a special character")
    if not any(ch.isupper() for ch in value):
        raise ValueError("Password must contain an uppercase character")
    if not any(ch.islower() for ch in value):
        raise ValueError("Password must contain an lowercase character")
    if not any(ch.isnumeric() for ch in value):
        raise ValueError("Password must contain an numeric character")


class UserCreateSchema(RequestSchema):
    # bcrypt only reads 72 bytes; 256 characters leaves room for passphrases without inviting abuse.
    password = Str(required=True, max_length=256, checks=[_password_rules], metadata={"description": PASSWORD_RULES})
    username = Str(required=True, min_length=1, max_length=255)


class LoginSchema(RequestSchema):
    grant_type = Str(pattern=r"^password$", load_default=None)
    username = Str(required=True)
    password = Str(required=True)
    scope = Str(load_default="")
    client_id = Str(load_default=None)
    client_secret = Str(load_default=None)


class TokenValidateSchema(RequestSchema):
    token = Str(required=True)


class UserSchema(Schema):
    id = fields.UUID()
    username = fields.String()
    created_at = Timestamp()
    updated_at = Timestamp()


class TokenSchema(Schema):
    access_token = fields.String()
    refresh_token = fields.String(allow_none=True)
    token_type = fields.String()


class DetailSchema(Schema):
    detail = fields.String()
