"""Benchmark: the dashboard's fleet page on a large fleet, in a real browser.

Starts `gpufleet up --no-local-agent` (embedded PostgreSQL in a temporary data dir), registers N
simulated hosts x 8 GPUs through /v1/agent/register and gives every GPU a sample (one heartbeat
per host), then drives Debian's Chromium (Playwright, headless, `/usr/bin/chromium`):

* sign-in to rendered: from clicking "Sign in" to every host and tile built (`/v1/me`,
  `/ui/config.json`, `/v1/fleet` and the DOM), measured by the browser's clock, --runs times
  (a reload each time);
* the parts: `/v1/fleet` fetch and the DOM work (performance measures the page records), the size
  of the answer, the DOM's node count;
* responsiveness: the page left live for --live-seconds (it refreshes every 5 s, updating the
  tiles in place): the browser's long tasks (> 50 ms) meanwhile, their longest and their sum
  beyond 50 ms (total blocking time), and how long a filter keystroke takes to show its result.

Prints one JSON object.

    python bench/dashboard.py [--hosts 1000] [--runs 5] [--live-seconds 12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine
from _up import start_server
from ingest import GPUS, gpu_list, register_all, uuid

CHROMIUM = "/usr/bin/chromium"


async def one_sample_each(url: str, credentials: list[str], seed: int = 7) -> int:
    """One heartbeat per host with one sample of each GPU (varied load); how many failed."""
    rng = random.Random(seed)
    now = datetime.now(UTC).isoformat()
    failed = 0
    sem = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:

        async def one(i: int, credential: str) -> None:
            nonlocal failed
            metrics = []
            for g in range(GPUS):
                util = rng.choice([0.0, rng.uniform(0, 100), rng.uniform(60, 100)])
                metrics.append(
                    {
                        "uuid": uuid(i, g),
                        "ts": [now],
                        "utilization_pct": [round(util, 1)],
                        "memory_used_mb": [int(81559 * util / 100)],
                        "temperature_c": [round(30 + util / 2, 1)],
                        "power_w": [round(70 + 6 * util, 1)],
                        "ecc_uncorrected": [0],
                        "xid_errors": [0],
                        "process_count": [1 if util else 0],
                    }
                )
            body = {"gpus": gpu_list(i), "metrics": metrics}
            async with sem:
                r = await c.post("/v1/agent/heartbeat", json=body, headers={"Authorization": f"Bearer {credential}"})
            if r.status_code != 200:
                failed += 1

        await asyncio.gather(*(one(i, cred) for i, cred in enumerate(credentials)))
    return failed


NEXT_FRAME = "() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(performance.now()))))"

LONG_TASKS = """() => {
  window.__long = [];
  new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__long.push(e.duration); })
    .observe({ type: "longtask", buffered: false });
}"""

FILTER = """async (text) => {
  const input = document.querySelector("#fleet-filter");
  const t0 = performance.now();
  input.value = text;
  input.dispatchEvent(new Event("input"));
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const shown = [...document.querySelectorAll("section.host")].filter((s) => !s.hidden).length;
  const ms = performance.now() - t0;
  input.value = "";
  input.dispatchEvent(new Event("input"));
  return { ms, shown };
}"""


def measure(url: str, key: str, hosts: int, runs: int, live_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        for _ in range(runs):
            page.goto(url + "/")
            page.evaluate("sessionStorage.clear()")
            page.goto(url + "/#/fleet")
            page.fill("#credential", key)
            t0 = page.evaluate("performance.now()")
            page.click("button[type=submit]")
            page.wait_for_selector("#fleet-grid[data-rendered]", timeout=120_000)
            t1 = page.evaluate("performance.now()")
            m = page.evaluate(
                """() => Object.fromEntries(["fleet-render", "fleet-fetch", "fleet-apply"].map(
                     (n) => [n, performance.getEntriesByName(n).map((e) => e.duration)]))"""
            )
            # one more frame: the tiles painted
            painted = page.evaluate(NEXT_FRAME)
            tiles = page.locator("a.tile").count()
            assert tiles == hosts * GPUS, tiles
            out["runs"].append(
                {
                    "signin_to_rendered_ms": round(t1 - t0, 1),
                    "signin_to_painted_ms": round(painted - t0, 1),
                    "fleet_page_mount_ms": round(m["fleet-render"][-1], 1),
                    "fleet_fetch_ms": round(m["fleet-fetch"][-1], 1),
                    "fleet_dom_ms": round(m["fleet-apply"][-1], 1),
                }
            )
        out["tiles"] = page.locator("a.tile").count()
        out["dom_nodes"] = page.evaluate("document.getElementsByTagName('*').length")
        page.evaluate(LONG_TASKS)
        page.evaluate("performance.clearMeasures()")
        time.sleep(live_s)
        long_tasks = page.evaluate("window.__long")
        updates = page.evaluate("performance.getEntriesByName('fleet-apply').map((e) => e.duration)")
        filters = [page.evaluate(FILTER, f"bench-{i:04d}") for i in (1, hosts // 2, hosts - 1)]
        out["live"] = {
            "seconds": live_s,
            "refreshes": len(updates),
            "update_in_place_ms_median": round(statistics.median(updates), 1) if updates else None,
            "long_tasks": len(long_tasks),
            "longest_task_ms": round(max(long_tasks), 1) if long_tasks else 0.0,
            "total_blocking_ms": round(sum(max(0.0, d - 50) for d in long_tasks), 1),
            "filter_keystroke_ms": [round(f["ms"], 1) for f in filters],
            "filter_hosts_shown": [f["shown"] for f in filters],
        }
        out["page_errors"] = errors
        browser.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--live-seconds", type=float, default=12.0)
    args = ap.parse_args()
    # Hosts heartbeat once: keep them "ready" for the length of the run.
    up = start_server(["up", "--no-local-agent"], {"GPUFLEET_HEARTBEAT_TIMEOUT_S": "3600"}, log_level="warning")
    try:
        t = time.monotonic()
        credentials = asyncio.run(register_all(up.url, up.headers, args.hosts))
        failed = asyncio.run(one_sample_each(up.url, credentials))
        setup_s = time.monotonic() - t
        # A running fleet's metrics partition has statistics; a fresh one gets them from
        # autovacuum within about a minute. Until then the planner guesses and /v1/fleet is slow:
        # wait for it, as a fleet that has run for a minute would be.
        t = time.monotonic()
        while time.monotonic() - t < 180:
            started = time.perf_counter()
            httpx.get(f"{up.url}/v1/fleet", headers=up.headers, timeout=60).raise_for_status()
            if time.perf_counter() - started < 1.0:
                break
            time.sleep(5)
        analyzed_after_s = time.monotonic() - t
        api = []
        size = 0
        for _ in range(5):
            t = time.perf_counter()
            r = httpx.get(f"{up.url}/v1/fleet", headers=up.headers, timeout=60)
            api.append((time.perf_counter() - t) * 1000)
            size = len(r.content)
            r.raise_for_status()
        result = measure(up.url, up.key, args.hosts, args.runs, args.live_seconds)
    finally:
        up.stop()
    runs = result.pop("runs")

    def med(key: str) -> float:
        return round(statistics.median(r[key] for r in runs), 1)

    print(
        json.dumps(
            {
                "benchmark": "dashboard fleet page",
                "fleet": {
                    "hosts": args.hosts,
                    "gpus": args.hosts * GPUS,
                    "setup_s": round(setup_s, 1),
                    "waited_for_statistics_s": round(analyzed_after_s, 1),
                },
                "heartbeats_failed": failed,
                "browser": "Debian chromium, headless, 1600x1000",
                "signin_to_rendered_ms_median": med("signin_to_rendered_ms"),
                "signin_to_painted_ms_median": med("signin_to_painted_ms"),
                "fleet_page_mount_ms_median": med("fleet_page_mount_ms"),
                "fleet_fetch_ms_median": med("fleet_fetch_ms"),
                "fleet_dom_ms_median": med("fleet_dom_ms"),
                "runs": runs,
                "api_fleet_ms_median": round(statistics.median(api), 1),
                "api_fleet_bytes": size,
                **result,
                "machine": machine(),
            },
            indent=2,
        )
    )
    if failed or result["page_errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
