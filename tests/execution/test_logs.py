"""Logs: order, idempotent resends, big and binary data, the cap, gaps, fencing, and live follow."""

from __future__ import annotations

import asyncio
import os

import pytest

from gpufleet.db.pool import Database
from gpufleet.domain.execution import ExecutionPolicy, ExitReport, LogChunkIn, LogEntry
from gpufleet.errors import InvalidInput, NotFound, StaleAttempt
from gpufleet.services import reports
from gpufleet.services.logs import append_logs, follow_logs, read_logs
from gpufleet.services.wakeups import WakeHub
from tests.execution.helpers import OK, assert_clean, fleet, running, snapshot
from tests.factories import ctx_for
from tests.scheduling.helpers import scheduler


def chunks_of(stream: str, data: bytes, *, size: int, seq: int = 1, offset: int = 0) -> list[LogChunkIn]:
    out = []
    for i in range(0, len(data), size):
        out.append(LogChunkIn(seq, stream, offset + i, data[i : i + size]))  # type: ignore[arg-type]
        seq += 1
    return out


async def read_all(db: Database, org_id: object, job_id: object, **kw: object) -> list[LogEntry]:
    out: list[LogEntry] = []
    after = -1
    while True:
        page = await read_logs(db, ctx_for(org_id), job_id, after_seq=after, **kw)  # type: ignore[arg-type]
        out += page.chunks
        after = page.last_seq
        if not page.chunks:
            return out


async def test_order_across_streams_and_idempotent_resends(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host)
    batch = [
        LogChunkIn(1, "stdout", 0, b"one\n"),
        LogChunkIn(2, "stderr", 0, b"warn\n"),
        LogChunkIn(3, "stdout", 4, b"two\n"),
    ]
    result = await append_logs(db, host, job_id, 1, list(reversed(batch)))  # sorted by seq on arrival
    assert (result.acked_seq, result.stored_chunks, result.stored_bytes, result.duplicate_chunks) == (3, 3, 13, 0)
    again = await append_logs(db, host, job_id, 1, batch)  # the reply was lost: sent again
    assert (again.acked_seq, again.stored_chunks, again.duplicate_chunks) == (3, 0, 3)
    # after an agent restart the same bytes may come cut differently: each byte is stored once
    recut = await append_logs(
        db, host, job_id, 1, [LogChunkIn(4, "stdout", 2, b"e\ntwo\nthree\n"), LogChunkIn(5, "stderr", 5, b"!\n")]
    )
    assert recut.stored_bytes == len(b"three\n!\n")
    page = await read_logs(db, ctx_for(org.id), job_id)
    assert [(c.seq, c.stream, c.offset, c.data) for c in page.chunks] == [
        (0, "stdout", 0, b"one\n"),
        (1, "stderr", 0, b"warn\n"),
        (2, "stdout", 4, b"two\n"),
        (3, "stdout", 8, b"three\n"),
        (4, "stderr", 5, b"!\n"),
    ]
    assert page.last_seq == 4 and not page.complete and page.attempt == 1
    await reports.report_exit(db, host, job_id, 1, OK)
    assert (await read_logs(db, ctx_for(org.id), job_id, after_seq=3)).complete  # this page reads the last chunk
    partial = await read_logs(db, ctx_for(org.id), job_id, after_seq=2, limit_bytes=1)
    assert [c.seq for c in partial.chunks] == [3] and not partial.complete  # one chunk left to read


async def test_several_megabytes_and_every_byte_value_round_trip(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host)
    big = os.urandom(5 * 1024 * 1024 + 123)
    binary = bytes(range(256)) * 16
    upload = chunks_of("stdout", big, size=64 * 1024)
    upload += chunks_of("stderr", binary, size=1000, seq=len(upload) + 1)
    for i in range(0, len(upload), 16):  # batches of 1 MiB, like the agent's uploads
        await append_logs(db, host, job_id, 1, upload[i : i + 16])
    got = await read_all(db, org.id, job_id, limit_bytes=512 * 1024)
    assert b"".join(c.data for c in got if c.stream == "stdout") == big
    assert b"".join(c.data for c in got if c.stream == "stderr") == binary
    assert [c.seq for c in got] == list(range(len(got)))
    assert "\ufffd" in got[-1].text  # a text view never fails on bytes that are not UTF-8
    page = await read_logs(db, ctx_for(org.id), job_id, limit_bytes=1)
    assert len(page.chunks) == 1  # at least one chunk, whatever the limit


async def test_the_cap_stores_one_truncation_notice_and_nothing_after(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host)
    policy = ExecutionPolicy(log_cap_bytes=1000)
    r1 = await append_logs(db, host, job_id, 1, chunks_of("stdout", b"a" * 1200, size=600), policy=policy)
    assert r1.truncated and r1.stored_bytes == 1000
    r2 = await append_logs(db, host, job_id, 1, chunks_of("stderr", b"b" * 500, size=100, seq=3), policy=policy)
    assert r2.truncated and r2.stored_bytes == 0 and r2.acked_seq == 7
    got = await read_all(db, org.id, job_id)
    stored = b"".join(c.data for c in got if c.stream != "system")
    notices = [c for c in got if c.stream == "system"]
    assert stored == b"a" * 1000
    assert len(notices) == 1 and b"log limit of 1000 bytes" in notices[0].data
    async with db.system_transaction() as conn:
        row = await conn.fetchrow("select log_bytes, log_truncated, stdout_end, stderr_end from job_attempts")
    assert row is not None and tuple(row.values()) == (1000, True, 1200, 500)


async def test_a_gap_marker_becomes_a_system_notice(db: Database) -> None:
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host)
    await append_logs(
        db,
        host,
        job_id,
        1,
        [LogChunkIn(1, "stdout", 0, b"", dropped_bytes=4096), LogChunkIn(2, "stdout", 4096, b"tail\n")],
    )
    got = await read_all(db, org.id, job_id)
    assert [(c.stream, c.offset) for c in got] == [("system", 0), ("stdout", 4096)]
    assert b"4096 bytes of stdout lost at offset 0" in got[0].data


async def test_stale_and_invalid_uploads_change_nothing(db: Database) -> None:
    org, (host,) = await fleet(db)
    _, (stranger,) = await fleet(db, "node-x")
    job_id = await running(db, org.id, host, retry_on_failure=True)
    before = await snapshot(db)
    for who, attempt in ((host, 2), (stranger, 1)):
        with pytest.raises(StaleAttempt):
            await append_logs(db, who, job_id, attempt, [LogChunkIn(1, "stdout", 0, b"x")])
    for bad in (
        [LogChunkIn(1, "system", 0, b"x")],  # type: ignore[arg-type]
        [LogChunkIn(1, "stdout", -1, b"x")],
        [LogChunkIn(1, "stdout", 0, b"x"), LogChunkIn(1, "stdout", 1, b"y")],
        [LogChunkIn(1, "stdout", 0, b"x", dropped_bytes=3)],
    ):
        with pytest.raises(InvalidInput):
            await append_logs(db, host, job_id, 1, bad)
    assert await snapshot(db) == before
    with pytest.raises(NotFound):
        await read_logs(db, ctx_for(stranger.org_id), job_id)

    # a failed attempt that was retried may still send its last output
    await reports.report_exit(db, host, job_id, 1, ExitReport("failed", 1, None, "exited with code 1"))
    assert (await append_logs(db, host, job_id, 1, [LogChunkIn(1, "stderr", 0, b"Traceback\n")])).stored_chunks == 1
    page = await read_logs(db, ctx_for(org.id), job_id, attempt=1)
    assert page.complete and page.current_attempt == 2 and page.chunks[0].data == b"Traceback\n"
    assert (await read_logs(db, ctx_for(org.id), job_id)).chunks == []  # attempt 2 has none yet
    await assert_clean(db)


@pytest.mark.parametrize("with_hub", [True, False], ids=["notify", "poll"])
async def test_follow_yields_chunks_as_they_arrive_and_ends_at_the_terminal_state(db: Database, with_hub: bool) -> None:
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host, retry_on_failure=True)
    hub = WakeHub(db, poll_s=0.05, recheck_s=30) if with_hub else None
    if hub:
        await hub.start()
    got: list[LogEntry] = []
    arrived = asyncio.Event()

    async def follow() -> None:
        async for chunk in follow_logs(db, ctx_for(org.id), job_id, hub=hub, poll_s=0.05):
            got.append(chunk)
            arrived.set()

    follower = asyncio.create_task(follow())
    try:
        for i in range(3):
            arrived.clear()
            await append_logs(db, host, job_id, 1, [LogChunkIn(i + 1, "stdout", i * 5, f"line{i}".encode())])
            await asyncio.wait_for(arrived.wait(), timeout=5)
            assert got[-1].data == f"line{i}".encode()
        # a retry: following goes on with the next attempt
        await reports.report_exit(db, host, job_id, 1, ExitReport("failed", 1, None, "exited with code 1"))
        await scheduler(db).run_once()
        await reports.report_started(db, host, job_id, 2)
        arrived.clear()
        await append_logs(db, host, job_id, 2, [LogChunkIn(1, "stdout", 0, b"second")])
        await asyncio.wait_for(arrived.wait(), timeout=5)
        assert not follower.done()
        await reports.report_exit(db, host, job_id, 2, OK)
        await asyncio.wait_for(follower, timeout=5)
    finally:
        follower.cancel()
        if hub:
            await hub.close()
    assert [(c.attempt, c.data) for c in got] == [(1, b"line0"), (1, b"line1"), (1, b"line2"), (2, b"second")]
    if hub:
        assert hub.notifications >= 4  # woken by NOTIFY, not by the periodic re-read


async def test_an_upload_while_the_job_ends_waits_instead_of_deadlocking(db: Database) -> None:
    # The reaper and exit reports lock the job row, then the attempt's; a log upload must take
    # them in the same order (its chunks' foreign key share-locks the job row).
    org, (host,) = await fleet(db)
    job_id = await running(db, org.id, host)
    await append_logs(db, host, job_id, 1, [LogChunkIn(1, "stdout", 0, b"a\n")])
    async with db.system_transaction() as conn:
        await conn.execute("select 1 from jobs where id = $1 for update", job_id)
        upload = asyncio.create_task(append_logs(db, host, job_id, 1, [LogChunkIn(2, "stdout", 2, b"b\n")]))
        await asyncio.sleep(0.3)  # the upload is waiting for a lock by now
        await conn.execute("update job_attempts set reason = 'ending' where job_id = $1 and attempt = 1", job_id)
    result = await asyncio.wait_for(upload, 10)
    assert (result.acked_seq, result.stored_chunks) == (2, 1)
