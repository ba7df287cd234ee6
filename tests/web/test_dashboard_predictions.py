"""The predictions page with real predictions: a model pushed, one prediction served by a replica on
the site's agent, then the page lists the model's deployment (its replicas and queue) and the
prediction with its status and predict time."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Page, expect

from gpufleet.inference.archive import pack
from tests.web.conftest import Site, shot, sign_in

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"


async def test_the_predictions_page_shows_deployments_and_predictions(page: Page, site: Site, artifacts: Path) -> None:
    slug = site.owner.org.slug
    r = await site.api.post("/v1/models", json={"name": "echo", "gpu_fraction": 0.25})
    assert r.status_code in (201, 409), r.text
    r = await site.api.post(
        f"/v1/models/{slug}/echo/versions",
        content=pack(EXAMPLES / "echo"),
        headers={"Content-Type": "application/gzip"},
    )
    assert r.status_code in (200, 201), r.text
    r = await site.api.post(
        f"/v1/models/{slug}/echo/predictions",
        json={"input": {"text": "from the web test"}},
        headers={"Prefer": "wait=60"},
        timeout=90,
    )
    p = r.json()
    assert (r.status_code, p["status"]) == (201, "succeeded"), r.text
    await sign_in(page, site, site.owner.key)
    await page.click("nav >> text=Predictions")
    deployment = page.locator("tr", has_text="model.echo")
    await expect(deployment).to_contain_text("1 ready of 1")
    prediction = page.locator("tr", has_text=p["id"][:8])
    await expect(prediction).to_contain_text("succeeded")
    await shot(page, artifacts, "predictions")
    assert site.console_errors == []
    # Leave the site as found: the deployment goes, and its replica with it.
    assert (await site.api.delete(f"/v1/deployments/{slug}/model.echo")).status_code == 204
