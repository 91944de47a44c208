"""A sample genai_session agent: register it, run it, watch it become active.

    # 1. get an agent JWT (as a logged-in user):
    curl -s -X POST http://localhost:8000/api/agents/register -H "Authorization: Bearer $TOKEN" \\
         -H 'Content-Type: application/json' \\
         -d '{"name": "echo agent", "description": "Echoes text", "input_parameters": {}}'
    # 2. run it with the `jwt` of the answer:
    uv run python scripts/sample_agent.py --jwt <jwt> [--router ws://127.0.0.1:8080/ws]

`GET /api/agents/` then shows it with `is_active: true` (within milliseconds); Ctrl-C stops it
and it turns inactive. This is what any agent built on genai-protocol 1.0.9 does.
"""

import argparse
import asyncio

from genai_session.session import GenAISession
from genai_session.utils.context import GenAIContext


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jwt", required=True, help="the `jwt` from POST /api/agents/register")
    parser.add_argument("--router", default="ws://127.0.0.1:8080/ws", help="ROUTER_WS_URL")
    parser.add_argument("--api", default="http://localhost:8000", help="the back-end, for file access")
    parser.add_argument("--name", default="echo agent", help="use the registered name to keep the alias")
    args = parser.parse_args()

    session = GenAISession(jwt_token=args.jwt, ws_url=args.router, api_base_url=args.api)

    @session.bind(name=args.name, description="Echoes text")
    async def echo(agent_context: GenAIContext, text: str) -> str:
        """Echo the given text back unchanged."""
        agent_context.logger.info(f"echoing {len(text)} characters")
        return text

    # Note: genai_session does not reconnect; if the router restarts, start the agent again.
    asyncio.run(session.process_events())


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
