"""The dashboard in a real browser: Debian's Chromium driven by Playwright's async API, against a
real server (background tasks on) on real PostgreSQL with a real agent on simulated GPUs.

One browser, one server, one database and one agent serve every test of this package (a new
browser context per test keeps their sessions apart). Playwright never downloads a browser
here: it launches the system's Chromium, and without one the tests fail saying how to install it.
Screenshots of every page go to ``tmp/artifacts/web`` (``GPUFLEET_TEST_ARTIFACTS`` moves them);
with ``GPUFLEET_DOCS_SCREENSHOTS=1`` they also replace the pictures in docs/dashboard/.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright
from playwright.async_api import expect as pw_expect

from gpufleet.agent.loop import Agent, AgentConfig
from gpufleet.db.pool import RUNTIME_ROLE, Database
from gpufleet.domain.tenancy import Role
from tests.api.conftest import Tenant, make_tenant
from tests.api.test_supabase import PROJECT as SUPABASE_PROJECT
from tests.api.test_supabase import SECRET as SUPABASE_SECRET
from tests.liveserver import LiveServer
from tests.pg import PgServer, unique_name

CHROMIUM = os.environ.get("GPUFLEET_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("GPUFLEET_TEST_ARTIFACTS", ROOT / "tmp" / "artifacts")) / "web"
DOCS_SHOTS = ROOT / "docs" / "dashboard"
DOCS_PAGES = ("fleet", "host", "queue", "jobs", "job", "usage", "events")
pw_expect.set_options(timeout=20_000)


@dataclass
class Site:
    url: str
    db: Database
    owner: Tenant
    viewer: Tenant
    api: httpx.AsyncClient
    tmp: Path
    host_name: str
    agent: Agent
    pg: PgServer
    db_name: str
    console_errors: list[str] = field(default_factory=list)

    async def submit(self, **body: Any) -> str:
        r = await self.api.post("/v1/jobs", json={"name": "web", "gpu_count": 1, **body})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def job(self, job_id: str) -> dict[str, Any]:
        r = await self.api.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def cli(self, *args: str, key: str | None = None) -> str:
        """The real `gpufleet` command, as a user runs it."""
        env = {
            **os.environ,
            "GPUFLEET_URL": self.url,
            "GPUFLEET_API_KEY": key or self.owner.key,
            "GPUFLEET_CONFIG_DIR": str(self.tmp / "cli-config"),
        }
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "gpufleet"),
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, (args, out, err)
        return out.decode()


def _install_chromium() -> None:
    """On a Debian machine where the tests run as root, install Debian's chromium (never a browser
    downloaded by Playwright), so the README's test command works on a fresh machine."""
    if Path(CHROMIUM).is_file() or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        subprocess.run(argv, env=env, check=False, capture_output=True, timeout=900)


@pytest.fixture(scope="package")
def chromium() -> str:
    if CHROMIUM == "/usr/bin/chromium":
        _install_chromium()
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"the browser tests need Debian's chromium at {CHROMIUM}: install it with `apt-get install -y chromium`",
            pytrace=False,
        )
    return CHROMIUM


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=chromium, headless=True)
        yield b
        await b.close()


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def site(pg_server: PgServer, template_db: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    name = unique_name("web")
    await pg_server.create_database(name, template=template_db)
    db = pg_server.database(name)
    await db.open()
    tmp = tmp_path_factory.mktemp("web")
    owner = await make_tenant(db, Role.OWNER)
    viewer = await make_tenant(db, Role.VIEWER, org=owner.org)
    live = LiveServer(
        pg_server.dsn(name),
        pg_server.dsn(name, user=RUNTIME_ROLE),
        # webhooks may reach this machine: a test points one at the server itself
        # (and Supabase sessions are accepted: a test signs in with one)
        settings={
            "cancel_grace_s": 1.0,
            "webhook_allow_networks": "127.0.0.0/8",
            "supabase_url": SUPABASE_PROJECT,
            "supabase_jwt_secret": SUPABASE_SECRET,
        },
        background=True,
    )
    await asyncio.to_thread(live.start)
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        async with httpx.AsyncClient(base_url=live.url, headers=owner.headers, timeout=30) as api:
            r = await api.post("/v1/join-tokens", json={})
            assert r.status_code == 201, r.text
            agent = Agent(
                AgentConfig(
                    server=live.url,
                    join_token=r.json()["token"],
                    simulate="2xA100-80GB",
                    name="web-node-1",
                    state_dir=tmp / "agent",
                    interval_s=0.5,
                    sample_interval_s=0.5,
                    backoff_initial_s=0.1,
                    backoff_max_s=0.5,
                    assignment_wait_s=2.0,
                    kill_grace_s=1.0,
                    stop_jobs_on_exit=True,
                    job_user="agent",
                )
            )
            task = asyncio.create_task(agent.run(stop))
            for _ in range(400):
                hosts = (await api.get("/v1/hosts")).json()["items"]
                if hosts and (await api.get("/v1/fleet")).json()["hosts"][0]["gpus"][0]["sampled_at"]:
                    break
                assert not task.done(), task
                await asyncio.sleep(0.05)
            yield Site(live.url, db, owner, viewer, api, tmp, "web-node-1", agent, pg_server, name)
    finally:
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, 20)
        await asyncio.to_thread(live.stop)
        await db.close()
        await pg_server.drop_database(name)


@pytest.fixture(scope="package")
def artifacts() -> Path:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest_asyncio.fixture(loop_scope="session")
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(viewport={"width": 1280, "height": 860})
    yield ctx
    await ctx.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(context: BrowserContext, site: Site) -> AsyncIterator[Page]:
    """A page that records the browser's errors: a test ends by asserting there were none."""
    p = await context.new_page()
    errors: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        # The predictions API answers 404 until it exists: the page says so; nothing else may fail.
        if msg.type == "error" and "404" not in msg.text:
            errors.append(msg.text)

    p.on("console", on_console)
    p.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    site.console_errors = errors
    yield p
    await p.close()


async def sign_in(page: Page, site: Site, key: str) -> None:
    await page.goto(site.url + "/")
    await page.fill("#credential", key)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#fleet-grid[data-rendered]")


async def shot(page: Page, artifacts: Path, name: str) -> None:
    await page.screenshot(path=str(artifacts / f"{name}.png"), full_page=False)
    if os.environ.get("GPUFLEET_DOCS_SCREENSHOTS") and name in DOCS_PAGES:  # docs/dashboard.md's pictures
        await page.screenshot(path=str(DOCS_SHOTS / f"{name}.jpg"), type="jpeg", quality=55, full_page=False)
