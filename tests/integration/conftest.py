"""Real servers for integration tests: Redis and PostgreSQL on this machine.

Where a server is unreachable, a test that needs it is skipped with the reason;
in CI (``CI=true``) it fails instead, so a missing service cannot pass as green.
Addresses can be moved with ``LIVEREC_TEST_REDIS_URL`` and ``LIVEREC_TEST_POSTGRES_URL``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

REDIS_URL = os.environ.get("LIVEREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "LIVEREC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def require_server(name: str, url: str, check: Callable[[], object]) -> None:
    """Run ``check``; if the server does not answer, fail in CI and skip elsewhere."""
    try:
        check()
    except Exception as exc:
        reason = f"{name} not reachable at {url}: {type(exc).__name__}: {exc}"
        if in_ci():
            pytest.fail(f"{reason} (CI=true: integration servers are required)")
        pytest.skip(reason)


def _ping_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def _ping_postgres() -> None:
    import psycopg

    with psycopg.connect(POSTGRES_URL, connect_timeout=2) as conn:
        conn.execute("SELECT 1")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A reachable Redis, as a redis:// URL."""
    require_server("Redis", REDIS_URL, _ping_redis)
    return REDIS_URL


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A reachable PostgreSQL database (libpq URL), where tests may create schemas."""
    require_server("PostgreSQL", POSTGRES_URL, _ping_postgres)
    return POSTGRES_URL
