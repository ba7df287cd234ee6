"""Which PostgreSQL a test session really ran on, from the server itself, and CI's check of it.

CI runs the suite twice, once on the embedded PostgreSQL and once on a server, by environment
alone; a leg that silently fell back to the embedded database (an unset or mistyped URL) would
pass and prove nothing. So .ci/run names the leg it expects (``GPUFLEET_TEST_EXPECT_DATABASE``)
and where to write the record (``GPUFLEET_TEST_DATABASE_RECORD``); the session fixture in
conftest.py asks the server for ``version()`` and where it is listening, and fails every test
when that is not the expected leg.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

EXPECT_ENV = "GPUFLEET_TEST_EXPECT_DATABASE"
RECORD_ENV = "GPUFLEET_TEST_DATABASE_RECORD"
LEGS = ("server", "embedded")


class WrongDatabase(AssertionError):
    """The tests ran on another database than the CI leg says."""


@dataclass(frozen=True)
class Leg:
    version: str  # select version()
    server_addr: str | None  # inet_server_addr(): None when connected over a Unix socket
    server_port: int | None
    listen_addresses: str  # the embedded database listens on no TCP address at all

    @property
    def embedded(self) -> bool:
        return self.server_addr is None and self.listen_addresses == ""

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "embedded": self.embedded})


def save(leg: Leg, path: str | None) -> None:
    """Written before the check, so that CI can show what a failing leg ran on."""
    if path:
        Path(path).write_text(leg.to_json())


async def record(dsn: str) -> Leg:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            """select version() v, host(inet_server_addr()) addr, inet_server_port() port,
                      current_setting('listen_addresses') listen"""
        )
    finally:
        await conn.close()
    assert row is not None
    return Leg(row["v"], row["addr"], row["port"], row["listen"])


def check(expect: str, leg: Leg, server_url: str | None) -> None:
    """Raise WrongDatabase unless ``leg`` is the ``expect`` leg (and, for a server, at ``server_url``)."""
    if expect not in LEGS:
        raise WrongDatabase(f"{EXPECT_ENV} must be one of {LEGS}, not {expect!r}")
    if expect == "embedded":
        if server_url:
            raise WrongDatabase(f"the embedded leg inherited GPUFLEET_TEST_DATABASE_URL={server_url}")
        if not leg.embedded:
            raise WrongDatabase(f"the embedded leg ran on a server at {leg.server_addr}:{leg.server_port}")
        return
    if leg.embedded:
        raise WrongDatabase(f"the server leg ran on the embedded database ({leg.version})")
    if not server_url:
        raise WrongDatabase("the server leg has no GPUFLEET_TEST_DATABASE_URL")
    want = urlsplit(server_url)
    want_port = want.port or 5432
    if leg.server_port != want_port or (want.hostname in ("127.0.0.1", "::1") and leg.server_addr != want.hostname):
        raise WrongDatabase(
            f"the server leg ran on {leg.server_addr}:{leg.server_port}, not {want.hostname}:{want_port}"
        )
