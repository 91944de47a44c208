"""genai-protocol 2.0 in a virtual environment of its own (the test process runs 1.0.9)."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PROTOCOL2 = "genai-protocol==2.0.0"

# Run inside that environment: an agent bound like the reference's examples, then the two helpers.
AGENT_SCRIPT = '''
import asyncio, json
from genai_session.session import GenAISession
from genai_session.utils.context import GenAIContext

session = GenAISession()

@session.bind(name="protocol2_agent", description="Echo")
async def echo(agent_context: GenAIContext, text: str) -> str:
    return text

async def main():
    out = {"agents": await session.get_agents()}
    try:
        out["active"] = await session.get_active_agents()
    except Exception as e:
        out["active_error"] = type(e).__name__ + ": " + str(e)
    print(json.dumps(out))

asyncio.run(main())
'''


def make_environment(root: Path) -> Path:
    """A venv with genai-protocol 2.0 installed by uv; returns its python."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is needed to build genai-protocol 2.0's environment")
    venv = root / "protocol2"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([uv, "pip", "install", "--quiet", "--python", str(python), PROTOCOL2], check=True)
    return python


async def run_protocol2_agent(python: Path, workdir: Path, api_base_url: str, jwt: str) -> dict[str, Any]:
    """Run AGENT_SCRIPT with the agent's JWT; returns what it printed."""
    script = workdir / "agent.py"
    script.write_text(AGENT_SCRIPT)
    env = {**os.environ, "AGENT_JWT_TOKEN": jwt, "BACKEND_API_BASE_URL": api_base_url,
           "ROUTER_WS_URL": "ws://127.0.0.1:1/ws"}
    proc = await asyncio.create_subprocess_exec(str(python), str(script), env=env, cwd=workdir,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result
