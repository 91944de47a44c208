"""Settings from the environment and `.env` files; the secret-key rules of D01."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest

from genai_backend.config import (
    DEFAULT_MASTER_BE_API_KEY,
    PUBLIC_DEFAULT_SECRET,
    ConfigError,
    from_env,
    parse_cors_origins,
)

KEY = {"MASTER_BE_API_KEY": "own-key::master_server_be"}


def test_cors_origins_are_trimmed() -> None:
    assert parse_cors_origins('[*, "http://localhost"]') == ("*", "http://localhost")
    assert parse_cors_origins("[http://a, http://b ]") == ("http://a", "http://b")
    with pytest.raises(ConfigError):
        parse_cors_origins("http://a")


def test_embedded_mode_generates_and_keeps_secret(tmp_path: Path) -> None:
    env = {"GENAI_DATA_DIR": str(tmp_path / "data")}
    first = from_env(env, project_dir=tmp_path / "proj")
    assert first.database_dsn is None and len(first.secret_key) == 64
    key_file = tmp_path / "data" / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert from_env(env, project_dir=tmp_path / "proj").secret_key == first.secret_key


def test_external_database_without_secret_refuses(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        from_env({"POSTGRES_HOST": "db"}, project_dir=tmp_path)


def test_public_default_secret_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="published default"):
        from_env({"SECRET_KEY": PUBLIC_DEFAULT_SECRET}, project_dir=tmp_path)


def test_dsn_from_postgres_variables_and_full_uri(tmp_path: Path) -> None:
    settings = from_env({"SECRET_KEY": "k", "POSTGRES_HOST": "db", "POSTGRES_PASSWORD": "p@ss", **KEY},
                        project_dir=tmp_path)
    assert settings.database_dsn == "postgresql://postgres:p%40ss@db:5432/postgres"
    settings = from_env({"SECRET_KEY": "k", "SQLALCHEMY_ASYNC_DATABASE_URI": "postgresql+asyncpg://u:p@h:1/d", **KEY},
                        project_dir=tmp_path)
    assert settings.database_dsn == "postgresql://u:p@h:1/d"


def test_env_files_own_then_parent_environment_wins(tmp_path: Path) -> None:
    project = tmp_path / "backend"
    project.mkdir()
    (tmp_path / ".env").write_text("SECRET_KEY=parent\nROUTER_WS_URL=ws://parent/ws\nPORT=9000\n")
    (project / ".env").write_text("# comment\nSECRET_KEY='own'\nexport DEBUG=true\n")
    settings = from_env({"PORT": "8001"}, project_dir=project)
    assert settings.secret_key == "own"
    assert settings.router_ws_url == "ws://parent/ws"
    assert settings.debug is True
    assert settings.port == 8001
    assert settings.files_dir == tmp_path / "files"


def test_bad_numbers_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PORT"):
        from_env({"SECRET_KEY": "k", "PORT": "eighty"}, project_dir=tmp_path)


@pytest.mark.parametrize("key", [None, "", DEFAULT_MASTER_BE_API_KEY])
def test_external_database_with_default_master_key_refuses(tmp_path: Path, key: str | None) -> None:
    env = {"SECRET_KEY": "k", "POSTGRES_HOST": "db"} | ({} if key is None else {"MASTER_BE_API_KEY": key})
    with pytest.raises(ConfigError, match="MASTER_BE_API_KEY is the router's published default"):
        from_env(env, project_dir=tmp_path)


def test_embedded_mode_accepts_default_master_key(tmp_path: Path) -> None:
    settings = from_env({"GENAI_DATA_DIR": str(tmp_path / "data")}, project_dir=tmp_path / "proj")
    assert settings.master_be_api_key == DEFAULT_MASTER_BE_API_KEY


def test_limits_from_env(tmp_path: Path) -> None:
    env = {"GENAI_DATA_DIR": str(tmp_path / "data"), "MAX_SOCKETS_PER_USER": "3", "LOGIN_THROTTLE_SECONDS": "60",
           "LOGIN_MAX_FAILURES_PER_ACCOUNT": "4", "REGISTER_MAX_PER_ADDRESS": "0"}
    settings = from_env(env, project_dir=tmp_path / "proj")
    assert (settings.max_sockets_per_user, settings.login_throttle_window) == (3, 60.0)
    assert (settings.login_max_failures_per_account, settings.register_max_per_address) == (4, 0)
    assert from_env({"GENAI_DATA_DIR": str(tmp_path / "data")}, project_dir=tmp_path / "p").max_sockets_per_user == 20
    with pytest.raises(ConfigError, match="MAX_SOCKETS_PER_USER"):
        from_env({**env, "MAX_SOCKETS_PER_USER": "many"}, project_dir=tmp_path / "proj")


def test_previous_secret_keys_are_listed_after_the_current_one(tmp_path: Path) -> None:
    settings = from_env({"SECRET_KEY": "new", "SECRET_KEY_PREVIOUS": " old1, ,old2,new,old1 "}, project_dir=tmp_path)
    assert settings.secret_key_previous == ("old1", "old2")
    assert settings.secret_keys == ("new", "old1", "old2")
    assert from_env({"SECRET_KEY": "k"}, project_dir=tmp_path).secret_keys == ("k",)
