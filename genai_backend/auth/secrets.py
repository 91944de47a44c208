"""Provider API keys at rest: AES-256-GCM under a scrypt key, in the reference's exact format.

`b64(ciphertext)*b64(salt)*b64(nonce)*b64(tag)`, key = scrypt(SECRET_KEY, salt, n=2**14, r=8,
p=1, dklen=32), 16-byte salt and nonce, no associated data (rest-api.md "API-key encryption
format"), so keys written by the reference decrypt here and the other way round.

scrypt costs tens of milliseconds and 16 MiB per call, so it runs in worker threads (D11). Every
chat message needs its provider key, so successful decryptions are memoised by ciphertext: the
same ciphertext under the same secret always yields the same plaintext, so the cache can never
be stale, and a chat pays for scrypt once per key rather than once per message.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
from collections import OrderedDict

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SALT_BYTES = 16
NONCE_BYTES = 16
TAG_BYTES = 16
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32, "maxmem": 64 * 1024 * 1024}
_CACHE_SIZE = 1024
# (secret, ciphertext) -> plaintext; touched on the event loop only.
_cache: OrderedDict[tuple[str, str], str] = OrderedDict()


class InvalidCiphertext(Exception):
    """Not a ciphertext of ours: malformed, or written under another SECRET_KEY, or tampered with."""


def _key(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode("utf-8"), salt=salt, **_SCRYPT)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encrypt_sync(plaintext: str, secret: str) -> str:
    salt, nonce = os.urandom(SALT_BYTES), os.urandom(NONCE_BYTES)
    sealed = AESGCM(_key(secret, salt)).encrypt(nonce, plaintext.encode("utf-8"), None)
    ciphertext, tag = sealed[:-TAG_BYTES], sealed[-TAG_BYTES:]
    return "*".join((_b64(ciphertext), _b64(salt), _b64(nonce), _b64(tag)))


def _split(token: str) -> tuple[bytes, bytes, bytes, bytes]:
    """The four parts, checked before any scrypt work: a plaintext key fails here, cheaply."""
    parts = token.split("*")
    if len(parts) != 4:
        raise InvalidCiphertext("expected four parts")
    try:
        ciphertext, salt, nonce, tag = (base64.b64decode(p.encode("ascii"), validate=True) for p in parts)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise InvalidCiphertext("a part is not base64") from None
    if not salt or len(nonce) < 8 or len(tag) != TAG_BYTES:
        raise InvalidCiphertext("wrong part sizes")
    return ciphertext, salt, nonce, tag


def decrypt_sync(token: str, secret: str) -> str:
    ciphertext, salt, nonce, tag = _split(token)
    try:
        plain = AESGCM(_key(secret, salt)).decrypt(nonce, ciphertext + tag, None)
        return plain.decode("utf-8")
    except (InvalidTag, UnicodeDecodeError, ValueError):
        raise InvalidCiphertext("does not decrypt") from None


def _remember(secret: str, token: str, plaintext: str) -> None:
    _cache[(secret, token)] = plaintext
    _cache.move_to_end((secret, token))
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)


async def encrypt(plaintext: str, secret: str) -> str:
    token = await asyncio.to_thread(encrypt_sync, plaintext, secret)
    _remember(secret, token, plaintext)
    return token


async def decrypt(token: str, secret: str) -> str:
    """The plaintext, or InvalidCiphertext."""
    cached = _cache.get((secret, token))
    if cached is not None:
        _cache.move_to_end((secret, token))
        return cached
    _split(token)  # fail fast without a thread hop
    plaintext = await asyncio.to_thread(decrypt_sync, token, secret)
    _remember(secret, token, plaintext)
    return plaintext


async def is_ours(token: str, secret: str) -> bool:
    try:
        await decrypt(token, secret)
    except InvalidCiphertext:
        return False
    return True
