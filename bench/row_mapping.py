"""Row -> domain object: ``repo/rows.mapper`` against the field-by-field constructor call it
replaced, on two hot reads (a job, a host); prints one JSON object.

    python bench/row_mapping.py [--rows 10000] [--repeat 7]

Rows are dicts shaped as the tables' rows (an ``asyncpg.Record`` is read by the same
``row["column"]`` lookups); each figure is the best of ``--repeat`` passes over all the rows,
the two ways interleaved.
"""

from __future__ import annotations

import argparse
import json
import timeit
import uuid
from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from _machine import machine
from gpufleet.domain.hosts import HostDetail, HostStatus
from gpufleet.domain.jobs import GpuRequirement, Job, JobSpec, JobStatus
from gpufleet.repo import hosts, jobs


def by_hand_job(row: Any) -> Job:
    spec = JobSpec(
        name=row["name"],
        command=row["command"],
        script=row["script"],
        model_type=row["model_type"],
        env=row["env"],
        working_dir=row["working_dir"],
        labels=row["labels"],
        priority=row["priority"],
        gpu=GpuRequirement(row["gpu_count"], row["gpu_milli"], row["min_memory_mb"], tuple(row["gpu_models"])),
        cpu_milli=row["cpu_milli"],
        ram_mb=row["ram_mb"],
        max_runtime_s=row["max_runtime_s"],
        retry_on_host_loss=row["retry_on_host_loss"],
        retry_on_failure=row["retry_on_failure"],
        max_attempts=row["max_attempts"],
    )
    return Job(
        id=row["id"],
        organization_id=row["organization_id"],
        name=row["name"],
        status=JobStatus(row["status"]),
        spec=spec,
        attempt=row["attempt"],
        host_id=row["host_id"],
        status_reason=row["status_reason"],
        pending_reason=row["pending_reason"],
        exit_code=row["exit_code"],
        submitted_by=row["submitted_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        cancel_requested_at=row.get("cancel_requested_at"),
        cost_estimate=row.get("cost_estimate"),
        kind=row.get("kind", "job"),
    )


def by_hand_host(row: Any) -> HostDetail:
    return HostDetail(
        id=row["id"],
        organization_id=row["organization_id"],
        name=row["name"],
        status=HostStatus(row["status"]),
        status_reason=row["status_reason"],
        hostname=row["hostname"],
        os=row["os"],
        kernel=row["kernel"],
        arch=row["arch"],
        cpu_cores=row["cpu_cores"],
        ram_mb=row["ram_mb"],
        cpu_milli_allocated=row["cpu_milli_allocated"],
        ram_mb_allocated=row["ram_mb_allocated"],
        driver_version=row["driver_version"],
        cuda_version=row["cuda_version"],
        agent_version=row["agent_version"],
        labels=row["labels"],
        simulated=row["simulated"],
        credential_prefix=row["credential_prefix"],
        revoked_at=row["revoked_at"],
        removed_at=row["removed_at"],
        registered_at=row["registered_at"],
        last_heartbeat_at=row["last_heartbeat_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def row_of(*classes: type, **values: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    row: dict[str, Any] = {}
    for cls in classes:
        for f in fields(cls):
            row[f.name] = uuid.uuid4() if f.name == "id" or f.name.endswith("_id") else now
    return {**row, **values}


def best_ms(read: Callable[[Any], Any], rows: list[dict[str, Any]]) -> float:
    return timeit.timeit(lambda: [read(r) for r in rows], number=1) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    cases = {
        "job": (
            by_hand_job,
            jobs._job,
            row_of(
                Job,
                JobSpec,
                status="pending",
                gpu_count=1,
                gpu_milli=1000,
                min_memory_mb=0,
                gpu_models=["A100"],
                kind="job",
            ),
        ),
        "host": (by_hand_host, hosts.host_row, row_of(HostDetail, status="ready")),
    }
    result: dict[str, Any] = {"rows": args.rows, "repeat": args.repeat}
    for name, (hand, mapper, row) in cases.items():
        rows = [dict(row) for _ in range(args.rows)]
        assert hand(rows[0]) == mapper(rows[0]), name
        by_hand_ms, mapper_ms = [], []
        for _ in range(args.repeat):  # interleaved, so that a change of load hits both alike
            by_hand_ms.append(best_ms(hand, rows))
            mapper_ms.append(best_ms(mapper, rows))
        result[name] = {"by_hand_ms": round(min(by_hand_ms), 2), "mapper_ms": round(min(mapper_ms), 2)}
    result["machine"] = machine()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
