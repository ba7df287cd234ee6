"""The webhook delivery worker, in every replica: claim due deliveries, send them, record attempts.

One round (``run_once``): deliveries whose worker vanished are due again; up to a batch of due
ones are claimed with ``FOR UPDATE SKIP LOCKED`` under a lease (replicas never take the same
one); each endpoint is checked by the SSRF guard and sent its deliveries in event order, a few at
a time; then every attempt is recorded and each delivery moves on (succeeded, retry later, gave
up) in one transaction. A replica killed between the claim and the record leaves leases behind
that end, and the deliveries are sent again: at least once, with the same ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import random
import socket
import time
from collections import defaultdict
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from gpufleet.backoff import delay_after
from gpufleet.config import Settings
from gpufleet.db.pool import Database
from gpufleet.domain.webhooks import Claim
from gpufleet.errors import ConfigurationError
from gpufleet.observability import ServerMetrics
from gpufleet.repo import events
from gpufleet.repo import webhook_deliveries as repo
from gpufleet.repo import webhooks as endpoints
from gpufleet.webhooks import schedule, ssrf
from gpufleet.webhooks.sender import Outcome, Sender
from gpufleet.webhooks.signing import SecretBox, headers, message_id, secret_key_bytes

log = logging.getLogger(__name__)

GONE = "the receiver answered 410 Gone"
FAILING = "every delivery failed for {days:g} days"


@dataclass(frozen=True, slots=True)
class RoundReport:
    reclaimed: int = 0
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    released: int = 0
    disabled: int = 0


class DeliveryWorker:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        rng: random.Random | None = None,
        resolver: ssrf.Resolver = ssrf.system_resolver,
        owner: str | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.db = db
        self.metrics = metrics
        self.settings = settings
        self.rng = rng or random.Random()
        self.resolver = resolver
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.allow = settings.webhook_networks
        self.box = SecretBox(settings.secret_key.get_secret_value())
        # Per endpoint and round: enough to keep its connections busy, few enough that a hanging
        # receiver's claims (timeout x rounds) stay well inside the lease.
        self.per_webhook = settings.webhook_endpoint_concurrency * 8
        rounds = math.ceil(self.per_webhook / settings.webhook_endpoint_concurrency)
        self.lease_s = settings.webhook_timeout_s * rounds + 30.0
        self.sender = Sender(
            timeout_s=settings.webhook_timeout_s, per_host_connections=settings.webhook_endpoint_concurrency
        )
        self._slots = asyncio.Semaphore(settings.webhook_concurrency)

    async def aclose(self) -> None:
        await self.sender.aclose()

    async def run_once(self) -> RoundReport:
        async with self.db.system_transaction() as conn:
            reclaimed = await repo.reclaim_expired(conn)
            claims = await repo.claim(
                conn,
                owner=self.owner,
                limit=self.settings.webhook_batch_size,
                per_webhook=self.per_webhook,
                lease_s=self.lease_s,
            )
        if not claims:
            return RoundReport(reclaimed=reclaimed)
        by_hook: dict[UUID | tuple[UUID, str], list[Claim]] = defaultdict(list)
        for c in claims:  # an endpoint; a prediction's own URL is one per organization and URL
            by_hook[c.delivery.webhook_id or (c.delivery.organization_id, c.url)].append(c)
        outcomes = await asyncio.gather(*(self._endpoint(group) for group in by_hook.values()))
        results: list[repo.Result] = []
        unsent: list[Claim] = []
        gone: set[UUID] = set()
        for sent, skipped in outcomes:
            results += sent
            unsent += skipped
            gone |= {h for r in sent if r.status_code == 410 and (h := r.claim.delivery.webhook_id)}
        ok_hooks = list({h for r in results if r.succeeded and (h := r.claim.delivery.webhook_id)})
        bad_hooks = list({h for r in results if not r.succeeded and (h := r.claim.delivery.webhook_id)} - set(ok_hooks))
        disabled = 0
        async with self.db.system_transaction() as conn:
            await repo.record(conn, owner=self.owner, results=results)
            await repo.release(conn, owner=self.owner, delivery_ids=[c.delivery.id for c in unsent], delay_s=5.0)
            await endpoints.mark_succeeded(conn, webhook_ids=ok_hooks)
            overdue = await endpoints.mark_failing(
                conn, webhook_ids=bad_hooks, disable_after_s=self.settings.webhook_disable_after_s
            )
            reasons = {w.id: FAILING.format(days=self.settings.webhook_disable_after_s / 86400) for w in overdue}
            reasons.update({h: GONE for h in gone})
            for hook_id, reason in reasons.items():
                w = await endpoints.disable(conn, webhook_id=hook_id, reason=reason)
                if w is not None:
                    disabled += 1
                    log.warning("webhook %s (%s) disabled: %s", w.id, w.url, reason)
                    await events.append(
                        conn,
                        w.organization_id,
                        "webhook",
                        w.id,
                        "webhook.disabled",
                        {"url": w.url, "reason": reason},
                        actor="webhooks",
                    )
        if self.metrics is not None:
            self.metrics.deliveries([(r.status, r.claim.delivery.created_at) for r in results])
        succeeded = sum(1 for r in results if r.succeeded)
        return RoundReport(reclaimed, len(claims), succeeded, len(results) - succeeded, len(unsent), disabled)

    async def _endpoint(self, claims: list[Claim]) -> tuple[list[repo.Result], list[Claim]]:
        """Send one endpoint's claims in event order, a few in flight; after a failure the ones not
        yet started are handed back (the receiver is struggling; they keep their place)."""
        url = claims[0].url
        try:
            target: ssrf.Target | None = await ssrf.resolve(url, self.allow, self.resolver)
            refused = None
        except ssrf.WebhookRefused as exc:
            target, refused = None, f"refused by the SSRF guard ({exc.rule}): {exc.message}"
        try:
            keys = [secret_key_bytes(self.box.open(s)) for s in claims[0].secrets]
        except ConfigurationError as exc:
            keys, refused = [], str(exc)
        results: list[repo.Result] = []
        skipped: list[Claim] = []
        failed = asyncio.Event()
        # A prediction's own URL gets its webhooks one at a time, in the order they were made (start,
        # output/logs, completed), as Replicate's receivers expect: they carry no sequence number.
        in_flight = 1 if claims[0].delivery.webhook_id is None else self.settings.webhook_endpoint_concurrency
        gate = asyncio.Semaphore(in_flight)

        async def one(c: Claim) -> None:
            async with gate:
                if failed.is_set():
                    skipped.append(c)
                    return
                async with self._slots:
                    if refused is not None or target is None:
                        outcome = Outcome(None, 0, error=refused)
                    else:
                        body = json.dumps(c.delivery.payload, separators=(",", ":")).encode()
                        signed = headers(message_id(c.delivery.id), int(time.time()), body, keys)
                        outcome = await self.sender.send(target, body, signed)
                if not outcome.succeeded:
                    failed.set()
                results.append(self._result(c, outcome, target))

        await asyncio.gather(*(one(c) for c in claims))
        return results, skipped

    def _result(self, c: Claim, o: Outcome, target: ssrf.Target | None) -> repo.Result:
        made = c.delivery.attempt + 1 - c.retry_from
        if o.succeeded:
            status, delay = "succeeded", None
        elif o.status_code == 410:
            status, delay = "dead", None
        else:
            delay = schedule.next_delay(made, self.rng)
            if delay is not None and o.status_code in schedule.RETRY_AFTER_STATUSES:
                asked = schedule.parse_retry_after(o.headers.get("retry-after"))
                if asked is not None:
                    delay = schedule.bounded_retry_after(asked, max_s=self.settings.webhook_retry_after_max_s)
            status = "dead" if delay is None else "failed"
        error = o.error
        if error is None and not o.succeeded:
            error = f"HTTP {o.status_code}" + (
                " (redirects are not followed)" if 300 <= (o.status_code or 0) < 400 else ""
            )
        return repo.Result(
            claim=c,
            status=status,
            delay_s=delay,
            url=c.url,
            address=target.address if target else None,
            status_code=o.status_code,
            headers=o.headers,
            body=o.body,
            error=error,
            latency_ms=o.latency_ms,
            succeeded=o.succeeded,
        )


async def _listen(db: Database, wake: asyncio.Event, stop: asyncio.Event) -> None:
    """Wake the worker when a delivery is created (NOTIFY at commit); reconnect when the link drops."""
    failures = 0
    rng = random.Random()
    while not stop.is_set():
        conn = None
        try:
            conn = await asyncpg.connect(db.runtime_dsn_)
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _c, lost=lost: lost.set())
            await conn.add_listener(repo.CHANNEL, lambda *_: wake.set())
            failures = 0
            wake.set()  # anything may have been created while nobody listened
            stopped = asyncio.create_task(stop.wait())
            dropped = asyncio.create_task(lost.wait())
            await asyncio.wait({stopped, dropped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            dropped.cancel()
        except (OSError, asyncpg.PostgresError) as exc:
            failures += 1
            delay = delay_after(1.0, failures, cap=30.0, jitter=0.2, rng=rng)
            log.warning("webhook wake-up listener down (%s); retrying in %.1f s", exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()


async def run(db: Database, settings: Settings, stop: asyncio.Event, metrics: ServerMetrics | None = None) -> None:
    """Rounds back to back while there is work; otherwise wait for a wake-up or ``webhook_poll_s``
    (retries come due without a notification). Errors back off like every background loop."""
    worker = DeliveryWorker(db, settings, metrics=metrics)
    wake = asyncio.Event()
    listener = None
    if not settings.database_transaction_pooler:
        listener = asyncio.create_task(_listen(db, wake, stop), name="webhook-listener")
    rng = random.Random()
    failures = 0
    try:
        while not stop.is_set():
            wake.clear()
            try:
                report = await worker.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                log.exception("webhook delivery round failed (%d in a row)", failures)
                report = RoundReport()
            else:
                failures = 0
            if report.claimed and not failures:
                continue  # there may be more due: go on at once (an idle round costs one query)
            delay = delay_after(settings.webhook_poll_s, failures, cap=60.0, jitter=0.1, rng=rng)
            waits = [asyncio.create_task(stop.wait()), asyncio.create_task(wake.wait())]
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            for t in waits:
                t.cancel()
    finally:
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        await worker.aclose()
