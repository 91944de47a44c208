"""Time `rotate-secrets` for many stored secrets (the rotation issue's closing figure).

    uv run python scripts/bench_rotation.py [--count 10000] [--mcp-share 0.1] [--batch-size 32] [--dsn ...]

Stores `count` secrets under an old key (provider API keys, and a share of MCP servers with an
Authorization header), then runs the rotation to a new key the way `genai-backend rotate-secrets`
does, and prints the counts and the time. Every ciphertext is distinct (its own nonce); to set
them up quickly they share a few salts, which the rotation cannot exploit: each ciphertext is
decrypted once (scrypt) and written under a fresh salt (scrypt again). Against the embedded
PostgreSQL in a temporary directory unless --dsn is given.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import sys
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from genai_backend.auth import secrets  # noqa: E402
from genai_backend.auth.rotation import rotate_secrets  # noqa: E402
from genai_backend.db import create_pool  # noqa: E402
from genai_backend.migrations import apply_migrations  # noqa: E402

OLD, NEW = "bench-old-" + "a" * 32, "bench-new-" + "b" * 32
SALTS = 16


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def ciphertexts(plaintexts: list[str], secret: str) -> list[str]:
    """Valid ciphertexts of the stored format, SALTS scrypt derivations for all of them."""
    keys = []
    for _ in range(SALTS):
        salt = os.urandom(secrets.SALT_BYTES)
        keys.append((salt, AESGCM(secrets._key(secret, salt))))
    out = []
    for i, text in enumerate(plaintexts):
        salt, aead = keys[i % SALTS]
        nonce = os.urandom(secrets.NONCE_BYTES)
        sealed = aead.encrypt(nonce, text.encode(), None)
        out.append("*".join((_b64(sealed[:-16]), _b64(salt), _b64(nonce), _b64(sealed[-16:]))))
    return out


async def main(count: int, mcp_share: float, batch_size: int, dsn: str | None) -> None:
    async with AsyncExitStack() as stack:
        if dsn is None:
            from scripts.benchkit import start_world

            dsn = (await start_world(stack, "bench-rotation-", None)).dsn
        await asyncio.to_thread(apply_migrations, dsn)
        pool = await create_pool(dsn, 1, 4)
        stack.push_async_callback(pool.close)
        n_mcp = int(count * mcp_share)
        n_providers = count - n_mcp
        user = uuid.uuid4()
        await pool.execute("INSERT INTO users (id, username, password) VALUES ($1, $2, 'x')", user, f"bench-{user}")
        started = time.perf_counter()
        keys = ciphertexts([f"sk-bench-{i}" for i in range(n_providers)], OLD)
        headers = ciphertexts([f'{{"Authorization": "Bearer t{i}"}}' for i in range(n_mcp)], OLD)
        await pool.executemany(
            "INSERT INTO modelproviders (id, name, api_key, provider_metadata, creator_id) VALUES ($1, $2, $3, '{}', $4)",
            [(uuid.uuid4(), f"p{i}", key, user) for i, key in enumerate(keys)])
        await pool.executemany(
            "INSERT INTO mcpservers (id, server_url, creator_id, is_active, headers, header_names) "
            "VALUES ($1, $2, $3, true, $4, '[\"Authorization\"]')",
            [(uuid.uuid4(), f"http://127.0.0.1:1/mcp/{i}", user, h) for i, h in enumerate(headers)])
        print(f"stored {n_providers} provider keys and {n_mcp} MCP header sets in {time.perf_counter() - started:.1f} s")
        report = await rotate_secrets(pool, (NEW, OLD), batch_size)
        print(f"rotation of {count} secrets: {report.summary()}")
        print(f"  {report.seconds / max(count, 1) * 1000:.1f} ms per secret on {os.cpu_count()} CPUs")
        sample = await pool.fetchval("SELECT api_key FROM modelproviders ORDER BY random() LIMIT 1")
        assert secrets.decrypt_sync(sample, NEW).startswith("sk-bench-")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--mcp-share", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dsn")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # per-batch progress
    logging.getLogger("genai_backend.auth.rotation").setLevel(logging.INFO)
    asyncio.run(main(args.count, args.mcp_share, args.batch_size, args.dsn))
