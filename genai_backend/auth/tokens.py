"""User and agent JWTs (HS256) with the reference's exact claims."""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import jwt
import orjson

USER_TOKEN_LIFETIME = 6 * 3600
# datetime.max in the reference: agent tokens never expire (revocation is the agent row, D25).
AGENT_TOKEN_EXP = 253402300799
ALGORITHM = "HS256"


class InvalidToken(Exception):
    pass


@dataclass(frozen=True)
class Claims:
    sub: uuid.UUID
    # Present only on agent tokens: the owner user.
    user_id: uuid.UUID | None

    @property
    def is_agent(self) -> bool:
        return self.user_id is not None


def issue_user_token(user_id: uuid.UUID, secret: str) -> str:
    # exp from the epoch clock, so the host's time zone cannot shift it (D26).
    return jwt.encode({"sub": str(user_id), "exp": int(time.time()) + USER_TOKEN_LIFETIME}, secret, algorithm=ALGORITHM)


def issue_agent_token(agent_id: uuid.UUID, user_id: uuid.UUID, secret: str) -> str:
    payload = {"sub": str(agent_id), "exp": AGENT_TOKEN_EXP, "user_id": str(user_id)}
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _b64(segment: str) -> bytes:
    """Strict base64url without padding (RFC 7515 §2): a token is valid in exactly one spelling.

    The stdlib decoder skips characters outside the alphabet, accepts `+`, `/` and `=`, and ignores
    the unused low bits of the last character; each of those would give a token other spellings.
    """
    if _B64URL.fullmatch(segment) is None or len(segment) % 4 == 1:
        raise ValueError("not unpadded base64url")
    decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != segment.encode("ascii"):
        raise ValueError("not the canonical spelling")
    return decoded


def decode(token: str, secret: str | Sequence[str]) -> Claims:
    """Verify an HS256 token's signature and expiry; `sub` (and `user_id`) must be UUIDs.

    `secret` may be the configured keys, current first: tokens of a previous key stay valid.

    Hand-rolled because it runs on every request: PyJWT's general decode costs ~200 us, this ~10.
    Only HS256 is accepted, whatever the header claims, so `alg: none` and key confusion are out.
    """
    try:
        header_b64, payload_b64, signature_b64 = token.split(".")
        header = orjson.loads(_b64(header_b64))
        if not isinstance(header, dict) or header.get("alg") != ALGORITHM:
            raise InvalidToken("algorithm")
        signed, signature = f"{header_b64}.{payload_b64}".encode("ascii"), _b64(signature_b64)
        keys = (secret,) if isinstance(secret, str) else secret
        if not any(hmac.compare_digest(hmac.new(key.encode(), signed, hashlib.sha256).digest(), signature)
                   for key in keys):
            raise InvalidToken("signature")
        payload = orjson.loads(_b64(payload_b64))
        exp = payload["exp"]
        if isinstance(exp, bool) or not isinstance(exp, (int, float)) or exp <= time.time():
            raise InvalidToken("expired")
        sub = uuid.UUID(str(payload["sub"]))
        raw_user = payload.get("user_id")
        user_id = uuid.UUID(str(raw_user)) if raw_user is not None else None
    except InvalidToken:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeEncodeError, binascii.Error) as exc:
        raise InvalidToken(type(exc).__name__) from None
    return Claims(sub=sub, user_id=user_id)
