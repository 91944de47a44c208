"""Provider API keys at rest: AES-256-GCM under a scrypt key, in the reference's exact format.

`b64(ciphertext)*b64(salt)*b64(nonce)*b64(tag)`, key = scrypt(SECRET_KEY, salt, n=2**14, r=8,
p=1, dklen=32), 16-byte salt and nonce, no associated data (rest-api.md "API-key encryption
format"), so keys written by the reference decrypt here and the other way round.

scrypt costs tens of milliseconds and 16 MiB per call, so it runs in worker threads (D11). Every
chat message needs its provider key, so successful decryptions are memoised by ciphertext: the
same ciphertext under the same secret always yields the same plaintext, so the cache can never
be stale, and a chat pays for scrypt once per key rather than once per message.

While SECRET_KEY is rotated, decryption takes the configured keys (current first) and tries each:
the format has no room for a key id, so `key_id()` fingerprints are kept beside the ciphertexts.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SALT_BYTES = 16
NONCE_BYTES = 16
TAG_BYTES = 16
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32, "maxmem": 64 * 1024 * 1024}
_CACHE_SIZE = 1024
# (key, ciphertext) -> plaintext; touched on the event loop only.
_cache: OrderedDict[tuple[str, str], str] = OrderedDict()
_KEY_ID_MESSAGE = b"genai-backend stored-secret key id"

# One key, or the configured keys with the current one first.
Keys = str | Sequence[str]


class InvalidCiphertext(Exception):
    """Not a ciphertext of ours: malformed, or written under another SECRET_KEY, or tampered with."""


def key_id(secret: str) -> str:
    """A fingerprint that names a key in the database without revealing it."""
    return hmac.new(secret.encode("utf-8"), _KEY_ID_MESSAGE, hashlib.sha256).hexdigest()[:16]


def _key_list(keys: Keys) -> tuple[str, ...]:
    return (keys,) if isinstance(keys, str) else tuple(keys)


def _key(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode("utf-8"), salt=salt, **_SCRYPT)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encrypt_sync(plaintext: str, secret: str) -> str:
    salt, nonce = os.urandom(SALT_BYTES), os.urandom(NONCE_BYTES)
    sealed = AESGCM(_key(secret, salt)).encrypt(nonce, plaintext.encode("utf-8"), None)
    ciphertext, tag = sealed[:-TAG_BYTES], sealed[-TAG_BYTES:]
    return "*".join((_b64(ciphertext), _b64(salt), _b64(nonce), _b64(tag)))


def encrypt_many_sync(plaintexts: Sequence[str], secret: str) -> list[str]:
    """Like `encrypt_sync` for each, with one salt (so one scrypt) for all of them.

    Safe for AES-GCM: every ciphertext still has its own random 16-byte nonce under the derived
    key, and the salt only ever protected against precomputation on SECRET_KEY, which one salt
    per batch does as well. Used by rotation, where scrypt is nearly all the cost.
    """
    salt = os.urandom(SALT_BYTES)
    aead = AESGCM(_key(secret, salt))
    tokens = []
    for plaintext in plaintexts:
        nonce = os.urandom(NONCE_BYTES)
        sealed = aead.encrypt(nonce, plaintext.encode("utf-8"), None)
        tokens.append("*".join((_b64(sealed[:-TAG_BYTES]), _b64(salt), _b64(nonce), _b64(sealed[-TAG_BYTES:]))))
    return tokens


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


def well_formed(token: str) -> bool:
    """Whether `token` has the format at all (cheap: no scrypt)."""
    try:
        _split(token)
    except InvalidCiphertext:
        return False
    return True


def decrypt_sync(token: str, secret: str) -> str:
    ciphertext, salt, nonce, tag = _split(token)
    try:
        plain = AESGCM(_key(secret, salt)).decrypt(nonce, ciphertext + tag, None)
        return plain.decode("utf-8")
    except (InvalidTag, UnicodeDecodeError, ValueError):
        raise InvalidCiphertext("does not decrypt") from None


def decrypt_any_sync(token: str, keys: Keys) -> tuple[str, str]:
    """The plaintext and the key (of `keys`, tried in order) that decrypts it, or InvalidCiphertext."""
    _split(token)
    for key in _key_list(keys):
        try:
            return decrypt_sync(token, key), key
        except InvalidCiphertext:
            continue
    raise InvalidCiphertext("does not decrypt under any configured key")


def _remember(secret: str, token: str, plaintext: str) -> None:
    _cache[(secret, token)] = plaintext
    _cache.move_to_end((secret, token))
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)


async def encrypt(plaintext: str, secret: str) -> str:
    token = await asyncio.to_thread(encrypt_sync, plaintext, secret)
    _remember(secret, token, plaintext)
    return token


async def decrypt_with_key(token: str, keys: Keys) -> tuple[str, str]:
    """The plaintext and the key that decrypted it (the first of `keys` that does), or InvalidCiphertext."""
    ordered = _key_list(keys)
    for key in ordered:
        cached = _cache.get((key, token))
        if cached is not None:
            _cache.move_to_end((key, token))
            return cached, key
    _split(token)  # fail fast without a thread hop
    plaintext, key = await asyncio.to_thread(decrypt_any_sync, token, ordered)
    _remember(key, token, plaintext)
    return plaintext, key


async def decrypt(token: str, secret: Keys) -> str:
    """The plaintext, or InvalidCiphertext."""
    return (await decrypt_with_key(token, secret))[0]


async def is_ours(token: str, secret: Keys) -> bool:
    try:
        await decrypt(token, secret)
    except InvalidCiphertext:
        return False
    return True
