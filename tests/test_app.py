"""Framework behaviour: errors, both slash spellings, docs, health probes, CORS."""
from __future__ import annotations

from aiohttp.test_utils import TestClient

from tests.conftest import User


async def test_unknown_route_is_404_json(client: TestClient) -> None:
    resp = await client.get("/api/nothing-here")
    assert resp.status == 404
    assert await resp.json() == {"detail": "Not Found"}
    assert resp.headers["Content-Type"].startswith("application/json")
    assert int(resp.headers["Content-Length"]) > 0


async def test_wrong_method_is_405_json(client: TestClient) -> None:
    resp = await client.delete("/api/register")
    assert resp.status == 405
    assert await resp.json() == {"detail": "Method Not Allowed"}


async def test_both_slash_spellings_served_directly(client: TestClient, user: User) -> None:
    for url in (f"/api/profiles/{user.id}", f"/api/profiles/{user.id}/"):
        resp = await client.get(url, headers=user.headers, allow_redirects=False)
        assert resp.status == 200, url
    resp = await client.get("/health/", allow_redirects=False)
    assert resp.status == 200


async def test_root_redirects_to_docs(client: TestClient) -> None:
    resp = await client.get("/", allow_redirects=False)
    assert resp.status == 307
    assert resp.headers["Location"] == "/docs"
    assert await resp.read() == b""


async def test_docs_and_openapi(client: TestClient) -> None:
    resp = await client.get("/docs")
    assert resp.status == 200
    assert "swagger" in (await resp.text()).lower()
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    spec = await resp.json()
    assert spec["openapi"] == "3.0.3"
    assert {"/api/register", "/api/login/access-token", "/api/validate-token", "/api/profiles/{user_id}",
            "/health", "/ready"} <= set(spec["paths"])
    # No duplicate entries for the other slash spelling.
    assert "/api/register/" not in spec["paths"]
    flows = spec["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]
    assert flows["password"]["tokenUrl"] == "/api/login/access-token"
    assert spec["paths"]["/api/profiles/{user_id}"]["get"]["security"] == [{"OAuth2PasswordBearer": []}, {"APIKeyBearer": []}]


async def test_health_and_ready(client: TestClient) -> None:
    resp = await client.get("/health")
    assert resp.status == 200
    resp = await client.get("/ready")
    assert resp.status == 200
    body = await resp.json()
    assert body["database"] == "ok" and body["router"]["state"] in {"disabled", "connecting", "disconnected", "connected"}


async def test_cors_preflight_and_error_headers(client: TestClient) -> None:
    resp = await client.options("/api/register", headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,authorization"})
    assert resp.status == 200
    assert await resp.text() == "OK"
    assert resp.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert resp.headers["Access-Control-Allow-Headers"] == "content-type,authorization"
    assert resp.headers["Access-Control-Max-Age"] == "600"
    resp = await client.get("/api/profiles/x", headers={"Origin": "http://localhost:3000"})
    assert resp.status == 401
    assert resp.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
