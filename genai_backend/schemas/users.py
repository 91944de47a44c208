"""Registration, login and token schemas."""
from __future__ import annotations

import unicodedata

from marshmallow import Schema, fields

from genai_backend.schemas import Timestamp
from genai_backend.validation import RequestSchema, Str

_SPECIALS = set("$@#%!^&*()-_+={}[]")
# What the 422 texts below mean; the texts themselves are the reference's (contract) and stay.
PASSWORD_RULES = ("At least 8 characters (the 422 says \"longer than 8 symbols\"; 8 is enough), "
                  "at most 72 bytes in UTF-8 (bcrypt reads no further), "
                  "with at least one special character out of $@#%!^&*()-_+={}[], one upper-case letter, one "
                  "lower-case letter and one digit. Checked in that order; the first rule broken is reported.")
# bcrypt reads 72 bytes; longer passwords would log in with any ending (auth/passwords.py).
PASSWORD_MAX_BYTES = 72
USERNAME_MAX_LENGTH = 255
# Control, format (zero-width, bidi), surrogate, private-use, unassigned, line/paragraph separators.
_INVISIBLE_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
# Unicode's Default_Ignorable_Code_Point characters outside those categories (fillers, variation
# selectors): they render as nothing.
_IGNORABLE_RANGES = ((0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F), (0x3164, 0x3164),
                     (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0), (0xE0100, 0xE01EF))


def normalize_username(value: str) -> str:
    """The one spelling of a username: NFKC (fullwidth `ａｄｍｉｎ` is `admin`, NFD `Å` is NFC)."""
    return unicodedata.normalize("NFKC", value)


def _invisible(ch: str) -> bool:
    point = ord(ch)
    return unicodedata.category(ch) in _INVISIBLE_CATEGORIES or any(lo <= point <= hi for lo, hi in _IGNORABLE_RANGES)


def _username_rules(value: str) -> None:
    if any(_invisible(ch) for ch in value):
        raise ValueError("Username must not contain invisible or control characters")
    if len(normalize_username(value)) > USERNAME_MAX_LENGTH:
        raise ValueError(f"Username must be at most {USERNAME_MAX_LENGTH} characters once normalised")


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
    if len(value.encode("utf-8")) > PASSWORD_MAX_BYTES:
        raise ValueError(f"Password must be at most {PASSWORD_MAX_BYTES} bytes long (UTF-8)")


class UserCreateSchema(RequestSchema):
    # The character limit is the old contract; the byte limit in the rules is the binding one.
    password = Str(required=True, max_length=256, checks=[_password_rules], metadata={"description": PASSWORD_RULES})
    username = Str(required=True, min_length=1, max_length=USERNAME_MAX_LENGTH, checks=[_username_rules],
                   metadata={"description": (
                       "Stored in Unicode NFKC form; names equal in that form are the same name. "
                       "Invisible and control characters are refused.")})


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
