"""Jobs in the browser: one submitted from the CLI appears and finishes live, its output is
followed as it is written, a member cancels one, and a viewer can do neither."""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.async_api import Page, expect

from tests.web.conftest import Site, shot, sign_in

PY = sys.executable
# Prints one line, waits until the test says go (a file appears), prints another: the first line
# must be on screen while the job still runs.
STEPPER = "import os, sys, time\nprint('first line', flush=True)\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.05)\nprint('last line', flush=True)\n"


async def test_job_from_the_cli_appears_runs_and_its_output_is_followed(
    page: Page, site: Site, artifacts: Path
) -> None:
    await sign_in(page, site, site.owner.key)
    await page.click("nav >> text=Jobs")
    await expect(page.locator("h1")).to_have_text("Jobs")
    go = site.tmp / "go-signal"
    job_id = (
        await site.cli("jobs", "submit", "-q", "--gpus", "1", "--name", "cli-stepper", "--", PY, "-c", STEPPER, str(go))
    ).strip()
    # The change feed brings it in without a reload.
    row = page.locator("tr", has=page.locator(f'a[href="#/jobs/{job_id}"]'))
    await expect(row).to_be_visible()
    await expect(row.locator(".st")).to_have_text("running")
    await shot(page, artifacts, "jobs")
    await row.locator("a").click()
    await expect(page.locator("h1")).to_contain_text("cli-stepper")
    log = page.locator("#log")
    await expect(log).to_contain_text("first line")
    assert (await site.job(job_id))["status"] == "running"  # followed while it runs, not read afterwards
    await expect(page.locator("h1 .st")).to_have_text("running")
    await shot(page, artifacts, "job")
    go.write_text("go")
    await expect(log).to_contain_text("last line")
    await expect(page.locator("#log-state")).to_have_text("end of output: the job succeeded")
    await expect(page.locator("h1 .st")).to_have_text("succeeded")
    await expect(page.locator("table", has_text="job.succeeded")).to_be_visible()
    # Back on the list, the row says it finished.
    await page.click("nav >> text=Jobs")
    await expect(row.locator(".st")).to_have_text("succeeded")
    assert site.console_errors == []


async def test_member_cancels_a_running_job(page: Page, site: Site, artifacts: Path) -> None:
    job_id = await site.submit(name="to-cancel", script="echo started; sleep 60")
    await sign_in(page, site, site.owner.key)
    await page.goto(f"{site.url}/#/jobs/{job_id}")
    await expect(page.locator("#log")).to_contain_text("started")
    await page.click("button:has-text('Cancel job')")
    await expect(page.locator("h1 .st")).to_have_text("cancelled")
    await expect(page.locator("button:has-text('Cancel job')")).to_have_count(0)
    job = await site.job(job_id)
    assert job["status"] == "cancelled" and "SIGTERM" in job["status_reason"], job
    assert site.console_errors == []


async def test_viewer_sees_no_cancel_button_and_the_api_refuses_anyway(page: Page, site: Site, artifacts: Path) -> None:
    job_id = await site.submit(name="viewer-watches", script="echo up; sleep 60")
    try:
        await sign_in(page, site, site.viewer.key)
        await expect(page.locator(".who .role")).to_have_text("viewer")
        # No admin actions on the fleet either.
        await expect(page.locator("section.host")).to_have_count(1)
        await expect(page.locator("section.host button")).to_have_count(0)
        await page.goto(f"{site.url}/#/jobs/{job_id}")
        await expect(page.locator("#log")).to_contain_text("up")
        await expect(page.locator("h1 .st")).to_have_text("running")
        await expect(page.locator("button:has-text('Cancel job')")).to_have_count(0)
        await shot(page, artifacts, "job-as-viewer")
        r = await site.api.post(f"/v1/jobs/{job_id}/cancel", headers=site.viewer.headers)
        assert r.status_code == 403, r.text
        assert (await site.job(job_id))["status"] == "running"
    finally:
        r = await site.api.post(f"/v1/jobs/{job_id}/cancel")
        assert r.status_code == 200, r.text
    assert site.console_errors == []


async def test_what_a_job_says_is_shown_as_text_never_run(page: Page, site: Site) -> None:
    hostile = "<img src=x onerror=\"document.title='owned'\"><script>document.title='owned'</script>"
    job_id = await site.submit(
        name=hostile, command=[PY, "-c", "import sys; print(sys.argv[1])", hostile], labels={"x": "<b>bold</b>"}
    )
    await sign_in(page, site, site.owner.key)
    await page.goto(f"{site.url}/#/jobs/{job_id}")
    await expect(page.locator("h1")).to_contain_text(hostile)
    await expect(page.locator("#log")).to_contain_text(hostile)
    assert await page.locator("main img").count() == 0 and await page.locator("main b").count() == 0
    assert await page.title() != "owned"
    await page.goto(f"{site.url}/#/jobs")
    await expect(page.locator("td a", has_text=hostile)).to_be_visible()
    assert await page.locator("main img").count() == 0
    assert await page.title() != "owned"
