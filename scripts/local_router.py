"""Serve the router test double (tests/router_double.py) for trying agents locally.

    uv run python scripts/local_router.py [--port 8080]

It follows the real router's rules (agent-bus.md §1-§2) with its default keys; point the
back-end at it with ROUTER_WS_URL=ws://127.0.0.1:8080/ws. For production use the real
genai-router.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.router_double import RouterDouble, RunningRouter  # noqa: E402


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    async with RunningRouter(RouterDouble(), port=args.port, host=args.host) as router:
        print(f"router double listening on {router.url} (Ctrl-C to stop)", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
