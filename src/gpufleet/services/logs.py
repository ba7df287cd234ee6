"""Job logs: the agent's ordered uploads in, pages and a live follow out.

Bytes are identified by (attempt, stream, offset) for good, so duplicates are dropped by offset,
not only by the agent's ``seq``: a chunk sent again after a lost reply (same seq, same bytes) and
one cut differently after an agent restart (the agent re-reads its files from the last
acknowledged offset) both store each byte once. Stored chunks get the server's own ``seq``
(0, 1, 2, ... per attempt, in upload order), the cursor of readers.

Per attempt at most ``log_cap_bytes`` are stored; past that, one ``system`` notice says so and
later output is counted but dropped. A marker for bytes the agent had to drop becomes a
``system`` notice of the gap. Counters live in the attempt's ``job_attempts`` row, locked per
upload, so the cap costs one row read and concurrent uploads of one attempt serialise.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from gpufleet import states
from gpufleet.db.pool import Connection as Conn
from gpufleet.db.pool import Database
from gpufleet.domain.execution import AppendResult, ExecutionPolicy, LogChunkIn, LogEntry, LogPage
from gpufleet.domain.hosts import HostIdentity
from gpufleet.domain.jobs import Job
from gpufleet.domain.tenancy import TenantContext
from gpufleet.errors import InvalidInput, NotFound
from gpufleet.repo import execution as exec_repo
from gpufleet.repo import jobs as jobs_repo
from gpufleet.repo import logs as repo
from gpufleet.repo.execution import AttemptRecord
from gpufleet.services.assignments import DEFAULT_POLICY
from gpufleet.services.hosts import ensure_current
from gpufleet.services.lookup import found
from gpufleet.services.reports import fence, stale_attempt
from gpufleet.services.wakeups import WakeHub

MAX_READ_BYTES = 8 * 1024 * 1024
MAX_READ_CHUNKS = 1000
AGENT_STREAMS = ("stdout", "stderr")


def _validate(chunks: Sequence[LogChunkIn], policy: ExecutionPolicy) -> list[LogChunkIn]:
    if len(chunks) > policy.log_batch_max_chunks:
        raise InvalidInput(f"at most {policy.log_batch_max_chunks} chunks per upload", field="chunks")
    total = 0
    seen: set[int] = set()
    for c in chunks:
        if isinstance(c.seq, bool) or not isinstance(c.seq, int) or c.seq < 0 or c.seq in seen:
            raise InvalidInput("every chunk needs a distinct seq >= 0", field="seq")
        seen.add(c.seq)
        if c.stream not in AGENT_STREAMS:
            raise InvalidInput("stream must be stdout or stderr", field="stream")
        if isinstance(c.offset, bool) or not isinstance(c.offset, int) or c.offset < 0:
            raise InvalidInput("offset must be a whole number >= 0", field="offset")
        if not isinstance(c.data, bytes | bytearray | memoryview):
            raise InvalidInput("data must be bytes", field="data")
        if isinstance(c.dropped_bytes, bool) or not isinstance(c.dropped_bytes, int) or c.dropped_bytes < 0:
            raise InvalidInput("dropped_bytes must be a whole number >= 0", field="dropped_bytes")
        if c.dropped_bytes and c.data:
            raise InvalidInput("a chunk with dropped_bytes carries no data", field="data")
        total += len(c.data)
    if total > policy.log_batch_max_bytes:
        raise InvalidInput(f"at most {policy.log_batch_max_bytes} bytes per upload", field="chunks")
    return sorted(chunks, key=lambda c: c.seq)


@dataclass
class _Plan:
    """What one upload stores, worked out on the attempt's counters (pure; no I/O)."""

    next_seq: int
    log_bytes: int
    truncated: bool
    ends: dict[str, int]
    cap: int
    rows: list[tuple[int, str, int, bytes]] = field(default_factory=list)
    duplicates: int = 0

    def _row(self, stream: str, data: bytes, offset: int | None = None) -> None:
        at = self.ends["system"] if offset is None else offset
        self.rows.append((self.next_seq, stream, at, data))
        self.next_seq += 1
        if stream == "system":
            self.ends["system"] += len(data)

    def _store(self, stream: str, offset: int, data: bytes) -> None:
        if self.truncated:
            return
        room = self.cap - self.log_bytes
        if len(data) <= room:
            self._row(stream, data, offset)
            self.log_bytes += len(data)
            return
        if room > 0 and stream != "system":  # output is cut at the cap; a notice is whole or absent
            self._row(stream, data[:room], offset)
            self.log_bytes += room
        self.truncated = True
        self._row("system", f"[gpufleet] log limit of {self.cap} bytes reached; later output is not stored\n".encode())

    def add(self, c: LogChunkIn) -> None:
        end = self.ends[c.stream]
        if c.dropped_bytes:
            stop = c.offset + c.dropped_bytes
            if stop <= end:
                self.duplicates += 1
                return
            self.ends[c.stream] = stop
            if not self.truncated:
                lost = stop - max(end, c.offset)
                note = (
                    f"[gpufleet] {lost} bytes of {c.stream} lost at offset {max(end, c.offset)} (agent buffer full)\n"
                )
                self._store("system", self.ends["system"], note.encode())
            return
        data = bytes(c.data)
        stop = c.offset + len(data)
        if not data or stop <= end:
            self.duplicates += 1
            return
        if c.offset < end:  # partly sent before: keep only the new tail
            data, offset = data[end - c.offset :], end
        else:
            offset = c.offset
        self.ends[c.stream] = stop
        self._store(c.stream, offset, data)


async def append_logs(
    db: Database,
    identity: HostIdentity,
    job_id: UUID,
    attempt: int,
    chunks: Sequence[LogChunkIn],
    *,
    policy: ExecutionPolicy = DEFAULT_POLICY,
) -> AppendResult:
    """Store an ordered batch of an attempt's output; idempotent; ``StaleAttempt`` when fenced.

    Accepted from the host the attempt ran on while it is the job's current attempt (even after
    it ended: trailing output), or when it ended by the agent's own exit report (output of a
    failed attempt that was retried). A fenced attempt's output is refused and nothing changes.
    """
    ordered = check_chunks(attempt, chunks, policy)
    async with db.transaction(identity.org_id) as conn:
        await ensure_current(conn, identity)
        # lock order: job, attempt
        job = await jobs_repo.get_for_key_share(conn, org_id=identity.org_id, job_id=job_id)
        record = await exec_repo.get_attempt(conn, org_id=identity.org_id, job_id=job_id, attempt=attempt)
        result, stored = await append_locked(conn, identity, job, job_id, attempt, ordered, policy, record)
        if stored:
            await repo.notify(conn)
    return result


def check_chunks(attempt: int, chunks: Sequence[LogChunkIn], policy: ExecutionPolicy) -> list[LogChunkIn]:
    """An upload's chunks, checked (``InvalidInput`` naming the field) and in ``seq`` order."""
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise InvalidInput("attempt must be a whole number >= 1", field="attempt")
    return _validate(chunks, policy)


async def append_locked(
    conn: Conn,
    identity: HostIdentity,
    job: Job | None,
    job_id: UUID,
    attempt: int,
    ordered: Sequence[LogChunkIn],
    policy: ExecutionPolicy,
    record: AttemptRecord | None,
) -> tuple[AppendResult, bool]:
    """``append_logs`` on a locked job (``record``: the attempt's row as read since); the result, and
    whether chunks were stored (the caller notifies followers once per transaction)."""
    acked = ordered[-1].seq if ordered else None
    org_id = identity.org_id
    if job is None:
        raise stale_attempt(job_id, attempt, "no such job")
    if not own_finished_attempt(record, identity):
        fence(job, identity, job_id, attempt)
    if not ordered:
        return AppendResult(acked, 0, 0, 0, record.log_truncated if record else False), False
    record = await exec_repo.ensure_attempt(
        conn, org_id=org_id, job_id=job_id, attempt=attempt, host_id=identity.host_id
    )
    plan = _Plan(record.log_next_seq, record.log_bytes, record.log_truncated, dict(record.ends), policy.log_cap_bytes)
    for c in ordered:
        plan.add(c)
    if plan.rows:
        await repo.insert_chunks(conn, org_id=org_id, job_id=job_id, attempt=attempt, rows=plan.rows)
    if plan.rows or plan.ends != record.ends:
        await repo.save_counters(
            conn,
            org_id=org_id,
            job_id=job_id,
            attempt=attempt,
            next_seq=plan.next_seq,
            log_bytes=plan.log_bytes,
            truncated=plan.truncated,
            ends=plan.ends,
        )
    stored = sum(len(d) for _, s, _, d in plan.rows if s != "system")
    return AppendResult(acked, len(plan.rows), stored, plan.duplicates, plan.truncated), bool(plan.rows)


def own_finished_attempt(record: AttemptRecord | None, identity: HostIdentity) -> bool:
    return record is not None and record.reported_by == "agent" and record.host_id == identity.host_id


# ------------------------------------------------------------------------------ reading


async def read_logs(
    db: Database,
    ctx: TenantContext,
    job_id: UUID,
    *,
    attempt: int | None = None,
    after_seq: int = -1,
    limit_bytes: int = 1024 * 1024,
    limit_chunks: int = MAX_READ_CHUNKS,
) -> LogPage:
    """One page of an attempt's logs (default: the job's current attempt), from after ``after_seq``.

    At least one chunk when any is left, then up to ``limit_bytes``. ``complete``: the attempt is
    over (the job is terminal or moved on to a later attempt) and nothing is left to read.
    """
    if attempt is not None and (isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1):
        raise InvalidInput("attempt must be a whole number >= 1", field="attempt")
    if isinstance(after_seq, bool) or not isinstance(after_seq, int) or after_seq < -1:
        raise InvalidInput("after_seq must be a whole number >= -1", field="after_seq")
    if isinstance(limit_bytes, bool) or not isinstance(limit_bytes, int) or not 1 <= limit_bytes <= MAX_READ_BYTES:
        raise InvalidInput(f"limit_bytes must be from 1 to {MAX_READ_BYTES}", field="limit_bytes")
    if isinstance(limit_chunks, bool) or not isinstance(limit_chunks, int) or not 1 <= limit_chunks <= MAX_READ_CHUNKS:
        raise InvalidInput(f"limit_chunks must be from 1 to {MAX_READ_CHUNKS}", field="limit_chunks")
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        job = found(await jobs_repo.get(conn, org_id=org_id, job_id=job_id), f"job {job_id}")
        which = job.attempt if attempt is None else attempt
        if which > job.attempt:
            raise NotFound(f"job {job_id} has no attempt {which} (it is on attempt {job.attempt})")
        chunks = await repo.read(
            conn,
            org_id=org_id,
            job_id=job_id,
            attempt=which,
            after_seq=after_seq,
            limit_bytes=limit_bytes,
            limit_chunks=limit_chunks,
        )
        last = chunks[-1].seq if chunks else after_seq
        more = bool(chunks) and await repo.has_after(conn, org_id=org_id, job_id=job_id, attempt=which, after_seq=last)
    return LogPage(job_id, which, chunks, last, _attempt_over(job, which) and not more, job.status.value, job.attempt)


def _attempt_over(job: Job, attempt: int) -> bool:
    return attempt < job.attempt or job.status in states.JOB_TERMINAL


async def follow_logs(
    db: Database,
    ctx: TenantContext,
    job_id: UUID,
    *,
    attempt: int | None = None,
    after_seq: int = -1,
    hub: WakeHub | None = None,
    poll_s: float = 0.5,
    limit_bytes: int = 1024 * 1024,
    from_attempt: int | None = None,
) -> AsyncIterator[LogEntry]:
    """Chunks as they arrive (for Server-Sent Events); ends once the job is terminal and all is read.

    ``attempt=None`` follows the job across attempts: when a retry or a requeue starts a new
    attempt, following goes on there (each chunk says its attempt). It starts at the job's
    current attempt, or at ``from_attempt`` (a follower resuming: ``after_seq`` is of that attempt).
    Wakes on the logs NOTIFY through ``hub`` (coalesced: one per upload transaction), else
    re-reads every ``poll_s``.
    """
    follow_latest = attempt is None
    cursor = after_seq
    current = attempt if attempt is not None else from_attempt
    while True:
        if hub is None:
            page = await read_logs(db, ctx, job_id, attempt=current, after_seq=cursor, limit_bytes=limit_bytes)
            woke = None
        else:
            with hub.subscribe("logs", job_id) as sub:
                page = await read_logs(db, ctx, job_id, attempt=current, after_seq=cursor, limit_bytes=limit_bytes)
                if not page.chunks and not page.complete:
                    await sub.wait(hub.wait_cap_s)
                woke = True
        for chunk in page.chunks:
            yield chunk
        cursor, current = page.last_seq, page.attempt
        if page.complete:
            if follow_latest and page.current_attempt > page.attempt:
                current, cursor = page.attempt + 1, -1
                continue
            return
        if woke is None and not page.chunks:
            await asyncio.sleep(poll_s)
