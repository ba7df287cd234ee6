"""The dashboard's pages in a real browser: sign-in, the fleet (a host and its GPUs, admin
actions, keyboard), queue, usage, events and predictions; its security headers."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
from playwright.async_api import Page, expect

from tests.api.test_supabase import token as supabase_token
from tests.web.conftest import Site, shot, sign_in


async def test_dashboard_is_served_with_a_strict_policy(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.url) as c:
        r = await c.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "<script>" not in r.text and "style=" not in r.text  # nothing inline for the policy to allow
        for src in re.findall(r'(?:src|href)="(/ui/[^"]+)"', r.text):
            asset = await c.get(src)
            assert asset.status_code == 200, src
            again = await c.get(src, headers={"If-None-Match": asset.headers["etag"]})
            assert again.status_code == 304
        assert (await c.get("/ui/js/../../pyproject.toml")).status_code == 404
        assert (await c.get("/ui/nope.js")).status_code == 404
        config = (await c.get("/ui/config.json")).json()
        assert config["permissions"]["jobs.cancel"] == "member" and config["roles"][0] == "viewer"


async def test_sign_in_and_see_the_host_and_its_gpus(page: Page, site: Site, artifacts: Path) -> None:
    await page.goto(site.url + "/")
    await page.fill("#credential", "gfk_not-a-real-key")
    await page.click("button[type=submit]")
    await expect(page.locator(".signin .error")).to_contain_text("did not accept")
    site.console_errors.clear()  # the browser logs the refused request
    await sign_in(page, site, site.owner.key)
    assert await page.evaluate("sessionStorage.getItem('gpufleet.credential')") == site.owner.key
    assert await page.evaluate("localStorage.length") == 0  # never kept beyond the tab
    host = page.locator("section.host", has_text=site.host_name)
    await expect(host).to_be_visible()
    await expect(host.locator(".badge")).to_have_text("SIMULATED")
    tiles = host.locator("a.tile")
    await expect(tiles).to_have_count(2)
    # Every colour has its words: utilization as a number, memory, temperature, health.
    await expect(tiles.first).to_have_attribute(
        "aria-label", re.compile(r"GPU 0, A100-80GB, \w+, .*% utilization, memory .* GB")
    )
    await expect(tiles.first.locator(".util")).to_have_text(re.compile(r"^\d+%$"))
    await expect(tiles.first.locator(".health")).to_contain_text("sim")
    await expect(page.locator(".summary")).to_contain_text("2 GPUs")
    await expect(page.locator("figure.chart svg")).to_have_attribute("aria-label", re.compile("utilization"))
    await shot(page, artifacts, "fleet")
    # Keyboard: the first tile is a Tab stop, arrows move along, Enter opens the GPU.
    await tiles.first.focus()
    await page.keyboard.press("ArrowRight")
    await expect(tiles.nth(1)).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("h1")).to_contain_text("GPU 1")
    await expect(page.locator("figure.chart")).to_be_visible()
    await shot(page, artifacts, "gpu")
    await page.click('.crumbs a[href^="#/hosts/"]')
    await expect(page.locator("h1")).to_contain_text(site.host_name)
    await shot(page, artifacts, "host")
    # Signing out forgets the key.
    await page.click("button:has-text('Sign out')")
    await expect(page.locator("#credential")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('gpufleet.credential')") is None
    assert site.console_errors == []


async def test_admin_drains_and_undrains_a_host(page: Page, site: Site) -> None:
    await sign_in(page, site, site.owner.key)
    host = page.locator("section.host", has_text=site.host_name)
    await host.locator("button:has-text('Drain')").click()
    await expect(host.locator(".st")).to_have_text("draining")
    assert (await site.api.get("/v1/hosts")).json()["items"][0]["status"] == "draining"
    await host.locator("button:has-text('Undrain')").click()
    await expect(host.locator(".st")).to_have_text("ready")
    assert site.console_errors == []


async def test_queue_usage_events_and_predictions_pages(page: Page, site: Site, artifacts: Path) -> None:
    # A quota of 0 GPUs keeps a job waiting, with its reason.
    r = await site.api.put("/v1/quotas", json={"gpu_model": None, "max_gpus": 0})
    assert r.status_code == 200, r.text
    quota_id = r.json()["id"]
    waiting = await site.submit(name="waits-for-quota", script="true", priority=5)
    try:
        await sign_in(page, site, site.owner.key)
        await page.click("nav >> text=Queue")
        row = page.locator("tr", has_text="waits-for-quota")
        await expect(row).to_contain_text("quota: 0 of 0")
        await expect(page.locator("table", has_text="all GPUs")).to_be_visible()
        await shot(page, artifacts, "queue")
    finally:
        await site.api.delete(f"/v1/quotas/{quota_id}")
        await site.api.post(f"/v1/jobs/{waiting}/cancel")
    await page.click("nav >> text=Usage")
    await expect(page.locator("h2", has_text="By day")).to_be_visible()
    await expect(page.locator("h2", has_text="Budgets")).to_be_visible()
    await shot(page, artifacts, "usage")
    await page.click("nav >> text=Events")
    await expect(page.locator("td", has_text="host.registered").first).to_be_visible()
    await expect(page.locator("h2", has_text="Webhooks")).to_be_visible()  # the owner may see them
    await shot(page, artifacts, "events")
    await page.click("nav >> text=Predictions")
    # Until the predictions API is there (404), the page says there are none.
    await expect(page.locator("main")).to_contain_text(re.compile("No predictions yet|Deployments"))
    await shot(page, artifacts, "predictions")
    assert site.console_errors == []


async def test_admin_follows_webhook_deliveries_and_their_attempts(page: Page, site: Site, artifacts: Path) -> None:
    # A receiver that answers 404: the delivery fails, with its attempt recorded.
    r = await site.api.post(
        "/v1/webhooks", json={"url": f"{site.url}/no-receiver-here", "event_types": ["webhook.test"]}
    )
    assert r.status_code == 201, r.text
    hook = r.json()["id"]
    try:
        assert (await site.api.post(f"/v1/webhooks/{hook}/test")).status_code == 202
        await sign_in(page, site, site.owner.key)
        await page.click("nav >> text=Events")
        row = page.locator("tr", has_text="/no-receiver-here")
        await row.locator("button:has-text('Deliveries')").click()
        delivery = page.locator("#deliveries tr", has_text="webhook.test")
        await expect(delivery.locator(".st")).to_have_text(re.compile("failed|dead"))
        await expect(delivery).to_contain_text("HTTP 404")
        await delivery.locator("summary").click()
        await expect(delivery.locator("li").first).to_contain_text("failed 404")
        await expect(delivery.locator("button:has-text('Redeliver')")).to_be_visible()
        await shot(page, artifacts, "webhooks")
        metrics = (await site.api.get("/metrics")).text
        assert re.search(r'gpufleet_webhook_deliveries_total\{outcome="failed"\} [1-9]', metrics), metrics
        assert re.search(rf'gpufleet_webhook_deliveries_pending\{{org="{site.owner.org.slug}"\}} [1-9]', metrics)
        # A viewer sees the change feed but no webhooks (admins only).
        viewer_page = await page.context.new_page()
        await sign_in(viewer_page, site, site.viewer.key)
        await viewer_page.click("nav >> text=Events")
        await expect(viewer_page.locator("td", has_text="host.registered").first).to_be_visible()
        await expect(viewer_page.locator("h2", has_text="Webhooks")).to_have_count(0)
        await viewer_page.close()
    finally:
        await site.api.delete(f"/v1/webhooks/{hook}")
    assert site.console_errors == []


async def test_a_supabase_session_signs_in_and_picks_an_organization(page: Page, site: Site) -> None:
    jwt = supabase_token(str(uuid.uuid4()))
    bearer = {"Authorization": f"Bearer {jwt}"}
    for name in ("Supa One", "Supa Two"):
        r = await site.api.post("/v1/organizations", json={"name": name}, headers=bearer)
        assert r.status_code == 201, r.text
    # A Supabase sign-in redirects back with the access token in the fragment.
    await page.goto(f"{site.url}/#access_token={jwt}&token_type=bearer&expires_in=300")
    await page.select_option("#org", label="Supa Two (owner)")
    await page.click("button:has-text('Continue')")
    await page.wait_for_selector("#fleet-grid[data-rendered]")
    await expect(page.locator(".who")).to_contain_text("Supa Two")
    await expect(page.locator("#fleet-grid")).to_contain_text("No hosts yet")
    assert "access_token" not in page.url  # dropped from the address bar (and the history)
    assert await page.evaluate("sessionStorage.getItem('gpufleet.credential')") == jwt
    assert site.console_errors == []
