"""User and agent JWTs (HS256) with the reference's exact claims."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

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


def decode(token: str, secret: str) -> Claims:
    """Verify signature and expiry; both ids must be UUIDs."""
    try:
        payload = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]})
        sub = uuid.UUID(str(payload["sub"]))
        raw_user = payload.get("user_id")
        user_id = uuid.UUID(str(raw_user)) if raw_user is not None else None
    except (jwt.PyJWTError, ValueError, TypeError, AttributeError) as exc:
        raise InvalidToken(str(exc)) from None
    return Claims(sub=sub, user_id=user_id)
