"""A hypothesis state machine over the production allocator and the database ledger.

Random hosts (models, sizes), jobs (whole, multi-GPU, fractional, model- and memory-constrained,
CPU-only), scheduler cycles, GPUs failing, hosts draining, jobs starting, finishing, failing and
being cancelled. After every step SQL checks: no GPU above 1000 milli or its memory, ledgers
equal to the sum of what holds them, no job on hardware that does not fit it, nothing held by a
job in a terminal state.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from gpufleet.db.pool import RUNTIME_ROLE, Database
from gpufleet.domain.jobs import JobStatus, gpu_type_tokens
from gpufleet.errors import InvalidTransition
from gpufleet.repo import jobs as jobs_repo
from gpufleet.repo import orgs
from gpufleet.services import hosts as hosts_service
from gpufleet.services import jobs as jobs_service
from gpufleet.services.transitions import transition_job
from tests.factories import insert_gpu, insert_host
from tests.pg import PgServer
from tests.scheduling.helpers import AUDIT, scheduler, submit

T = TypeVar("T")

MODELS = {"A100-80GB": 81920, "L4": 23034, "T4-16GB": 15360}


class _Loop:
    """An event loop in a thread: hypothesis drives the machine synchronously, the database is async."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def loop() -> Iterator[_Loop]:
    runner = _Loop()
    yield runner
    runner.close()


def test_ledger_state_machine(pg_server: PgServer, db_name: str, loop: _Loop) -> None:
    db = Database(pg_server.dsn(db_name), pg_server.dsn(db_name, user=RUNTIME_ROLE), min_size=1, max_size=4)
    loop.run(db.open())
    sched = scheduler(db)
    seen = {"placed": 0, "released": 0, "checks": 0, "drains": 0}

    class Ledger(RuleBasedStateMachine):
        hosts = Bundle("hosts")
        gpus_ = Bundle("gpus")
        jobs = Bundle("jobs")

        @initialize()
        def org(self) -> None:
            async def make() -> uuid.UUID:
                org_id = uuid.uuid4()
                async with db.system_transaction() as conn:
                    await orgs.create(conn, org_id=org_id, name="sm", slug=f"sm-{org_id.hex[:10]}")
                return org_id

            self.org_id = loop.run(make())
            self.host_ids: list[uuid.UUID] = []
            self.draining: set[uuid.UUID] = set()
            self._host("A100-80GB", 4, 64)  # so that most jobs have somewhere to go from the start

        @rule(
            target=gpus_,
            model=st.sampled_from(sorted(MODELS)),
            count=st.integers(1, 4),
            cores=st.sampled_from([16, 64]),
        )
        def add_host(self, model: str, count: int, cores: int) -> Any:
            return multiple(*self._host(model, count, cores))

        def _host(self, model: str, count: int, cores: int) -> list[uuid.UUID]:
            async def make() -> list[uuid.UUID]:
                async with db.system_transaction() as conn:
                    host = await insert_host(
                        conn, org_id=self.org_id, name=f"h-{uuid.uuid4().hex[:6]}", cpu_cores=cores, ram_mb=65536
                    )
                    self.host_ids.append(host.id)
                    return [
                        (
                            await insert_gpu(
                                conn,
                                org_id=self.org_id,
                                host_id=host.id,
                                uuid=f"GPU-{uuid.uuid4()}",
                                index=i,
                                model=model,
                                memory_mb=MODELS[model],
                            )
                        ).id
                        for i in range(count)
                    ]

            return loop.run(make())

        @rule(
            target=jobs,
            shape=st.sampled_from([(1, 1000), (2, 1000), (3, 1000), (1, 250), (1, 500), (0, 0)]),
            model=st.sampled_from([None, None, "A100", "L4", "T4"]),
            memory_gb=st.sampled_from([0, 8, 20]),
            cores=st.sampled_from([0, 1, 4]),
        )
        def submit_job(self, shape: tuple[int, int], model: str | None, memory_gb: int, cores: int) -> uuid.UUID:
            count, milli = shape
            spec: dict[str, Any] = {"gpu_count": count, "gpu_milli": milli, "cpu_milli": cores * 1000}
            if count:
                spec["min_memory_mb"] = memory_gb * 1024
                spec["gpu_models"] = [model] if model else []
            return loop.run(submit(db, self.org_id, **spec))

        @rule()
        def schedule(self) -> None:
            result = loop.run(sched.run_once())
            seen["placed"] += result.placed

            async def hosts_of(ids: tuple[uuid.UUID, ...]) -> set[uuid.UUID]:
                async with db.system_transaction() as conn:
                    return {r[0] for r in await conn.fetch("select host_id from jobs where id = any($1)", list(ids))}

            # A draining host takes no new work.
            assert not (loop.run(hosts_of(result.placed_job_ids)) & self.draining)

        @rule(pick=st.integers(0, 100), drain=st.booleans())
        def drain_host(self, pick: int, drain: bool) -> None:
            """A host is drained (what runs there finishes, nothing new is placed) or taken back."""
            host = self.host_ids[pick % len(self.host_ids)]
            if drain:
                loop.run(hosts_service.drain_host(db, org_id=self.org_id, host_id=host, reason="state machine"))
                self.draining.add(host)
                seen["drains"] += 1
            elif host in self.draining:
                loop.run(hosts_service.undrain_host(db, org_id=self.org_id, host_id=host))
                self.draining.discard(host)

        @rule(
            pick=st.integers(0, 10_000),
            to=st.sampled_from(
                [JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PENDING]
            ),
        )
        def move(self, pick: int, to: JobStatus) -> None:
            """A job that holds GPUs starts, finishes, fails, is cancelled or is requeued."""

            async def active() -> list[uuid.UUID]:
                async with db.transaction(self.org_id) as conn:
                    found = await jobs_repo.get_gpu_jobs(conn, org_id=self.org_id, limit=1000)
                return sorted(j.id for j in found if j.status in (JobStatus.ALLOCATED, JobStatus.RUNNING))

            candidates = loop.run(active())
            if not candidates:
                # Nothing holds GPUs yet: let the scheduler place what is queued, so that releases are
                # exercised on every run rather than only when the draw happened to schedule first.
                self.schedule()
                candidates = loop.run(active())
            if not candidates:
                return
            job = candidates[pick % len(candidates)]

            async def go() -> None:
                async with db.transaction(self.org_id) as conn:
                    current = await jobs_repo.get_for_update(conn, org_id=self.org_id, job_id=job)
                    assert current is not None
                    if to in {JobStatus.SUCCEEDED, JobStatus.FAILED} and current.status is JobStatus.ALLOCATED:
                        current = await transition_job(conn, current, JobStatus.RUNNING)
                    if to in _allowed(current.status):
                        # A requeue is the next attempt, as the reaper and the agent reports do it.
                        extra = {"attempt": current.attempt + 1} if to is JobStatus.PENDING else {}
                        await transition_job(conn, current, to, reason="state machine", **extra)
                        seen["released"] += 1

            loop.run(go())

        @rule(job=jobs)
        def cancel(self, job: uuid.UUID) -> None:
            async def go() -> None:
                # A finished job refuses a cancel with InvalidTransition (409): the one allowed error.
                with contextlib.suppress(InvalidTransition):
                    await jobs_service.cancel(db, self.org_id, job)

            loop.run(go())

        @rule(gpu=gpus_, status=st.sampled_from(["unhealthy", "maintenance", "available"]))
        def gpu_health(self, gpu: uuid.UUID, status: str) -> None:
            async def go() -> None:
                async with db.system_transaction() as conn:
                    await conn.execute(
                        """update gpu_resources set status = case
                               when $2 = 'available' then case when allocated_milli > 0 then 'allocated' else 'available' end
                               else $2 end
                            where id = $1""",
                        gpu,
                        status,
                    )

            loop.run(go())

        @invariant()
        def ledger_is_exact(self) -> None:
            async def check() -> dict[str, list[Any]]:
                async with db.system_transaction() as conn:
                    found = {name: [r[0] for r in await conn.fetch(sql)] for name, sql in AUDIT.items()}
                    found["unfit"] = [
                        r[0]
                        for r in await conn.fetch(
                            """select a.id from allocations a join jobs j on j.id = a.job_id
                                 join gpu_resources g on g.id = a.gpu_id
                                where a.released_at is null
                                  and (g.memory_mb < j.min_memory_mb or a.milli <> j.gpu_milli
                                       or g.host_id <> j.host_id)"""
                        )
                    ]
                    rows = await conn.fetch(
                        """select j.gpu_models, g.model from allocations a join jobs j on j.id = a.job_id
                             join gpu_resources g on g.id = a.gpu_id
                            where a.released_at is null and cardinality(j.gpu_models) > 0"""
                    )
                for r in rows:
                    model_tokens = set(gpu_type_tokens(r["model"]))
                    if not any(set(gpu_type_tokens(m)) <= model_tokens for m in r["gpu_models"]):
                        found["unfit"].append((r["gpu_models"], r["model"]))
                return found

            found = loop.run(check())
            seen["checks"] += 1
            assert all(not v for v in found.values()), found

    try:
        run_state_machine_as_test(
            Ledger,
            settings=settings(
                max_examples=25,
                stateful_step_count=40,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            ),
        )
    finally:
        loop.run(db.close())
    # The machine really exercised the ledger: placements, releases, and checks after each step.
    assert seen["placed"] >= 10 and seen["released"] >= 5 and seen["checks"] >= 100 and seen["drains"] >= 5, seen


def _allowed(status: JobStatus) -> frozenset[JobStatus]:
    from gpufleet.states import JOB_TRANSITIONS

    return JOB_TRANSITIONS.get(status, frozenset())
