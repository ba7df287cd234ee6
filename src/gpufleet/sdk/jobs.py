"""SDK methods: Jobs and quotas."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from uuid import UUID

import httpx
from pydantic import TypeAdapter

from gpufleet.backoff import Backoff
from gpufleet.domain.jobs import JobStatus
from gpufleet.limits import WAIT_MAX_S
from gpufleet.schemas.common import Page
from gpufleet.schemas.execution import LogEntryOut, LogPageOut
from gpufleet.schemas.jobs import EventRead, JobCreate, JobRead, QuotaRead, RetryPolicy
from gpufleet.sdk.base import LONG_POLL_MARGIN_S, BaseClient, present
from gpufleet.sdk.errors import GpufleetError, ServiceUnavailable, api_error
from gpufleet.sdk.sse import events

# The server sends a keep-alive every 15 s: a quieter connection is dead.
FOLLOW_READ_TIMEOUT_S = 60.0
RETRY_STATUSES = frozenset({502, 503, 504})


def job_body(spec: JobCreate | None = None, **given: Any) -> dict[str, Any]:
    """The JSON of a job to submit: ``spec``'s fields, then every keyword that is not None."""
    body: dict[str, Any] = spec.model_dump(mode="json", exclude_unset=True) if spec else {}
    for key, value in given.items():
        if value is None:
            continue
        if key in ("command", "gpu_models"):
            value = list(value)
        elif key in ("env", "labels"):
            value = dict(value)
        elif isinstance(value, RetryPolicy):
            value = value.model_dump()
        body[key] = value
    return body


def jobs_params(
    status: Sequence[JobStatus] | None, labels: Mapping[str, str] | None, limit: int | None, cursor: str | None
) -> dict[str, Any]:
    return {
        "status": [JobStatus(s).value for s in status] if status else None,
        "label": [f"{k}={v}" for k, v in labels.items()] if labels else None,
        "limit": limit,
        "cursor": cursor,
    }


class JobWait:
    """``wait_job``'s long polls: each asks the server for at most ``WAIT_MAX_S``, so no proxy
    times out a quiet connection, and the last ends at the caller's ``timeout_s`` (None: never)."""

    def __init__(self, timeout_s: float | None) -> None:
        self.deadline = None if timeout_s is None else time.monotonic() + max(0.0, timeout_s)

    def next_call(self) -> dict[str, Any]:
        """The next poll's query and HTTP timeout (the server holds the answer up to ``timeout_s``)."""
        left = WAIT_MAX_S if self.deadline is None else max(0.0, self.deadline - time.monotonic())
        step = min(left, WAIT_MAX_S)
        return {"params": {"timeout_s": round(step, 3)}, "timeout": step + LONG_POLL_MARGIN_S}

    def over(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


class JobsMixin(BaseClient):
    # -- jobs -----------------------------------------------------------------------------

    def submit_job(
        self,
        spec: JobCreate | None = None,
        *,
        name: str | None = None,
        command: Sequence[str] | None = None,
        script: str | None = None,
        gpu_count: int | None = None,
        gpu_milli: int | None = None,
        min_memory_gb: float | None = None,
        gpu_models: Sequence[str] | None = None,
        cpu_cores: float | None = None,
        ram_gb: float | None = None,
        priority: int | None = None,
        max_runtime: str | int | None = None,
        env: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        working_dir: str | None = None,
        model_type: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> JobRead:
        """Queue a job: pass a ``JobCreate``, or its fields as keywords (keywords win).

        The server validates; a bad field is a ``ValidationFailed`` (422) whose detail names it.
        """
        body = job_body(
            spec,
            name=name,
            command=command,
            script=script,
            gpu_count=gpu_count,
            gpu_milli=gpu_milli,
            min_memory_gb=min_memory_gb,
            gpu_models=gpu_models,
            cpu_cores=cpu_cores,
            ram_gb=ram_gb,
            priority=priority,
            max_runtime=max_runtime,
            env=env,
            labels=labels,
            working_dir=working_dir,
            model_type=model_type,
            retry=retry,
        )
        return self._one(JobRead, "POST", "/v1/jobs", json=body)

    def get_job(self, job_id: UUID) -> JobRead:
        return self._one(JobRead, "GET", f"/v1/jobs/{job_id}")

    def jobs_page(
        self,
        *,
        status: Sequence[JobStatus] | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[JobRead]:
        """One page, newest first; pass its ``next_cursor`` back for the next."""
        params = jobs_params(status, labels, limit, cursor)
        return Page[JobRead].model_validate(self.request("GET", "/v1/jobs", params=params))

    def list_jobs(
        self, *, status: Sequence[JobStatus] | None = None, labels: Mapping[str, str] | None = None
    ) -> Iterator[JobRead]:
        """Every matching job, newest first, fetched a page at a time as you iterate."""
        return self._all(JobRead, "/v1/jobs", jobs_params(status, labels, None, None))

    def cancel_job(self, job_id: UUID) -> JobRead:
        """Cancel; a running job comes back still running with ``cancel_requested_at`` set."""
        return self._one(JobRead, "POST", f"/v1/jobs/{job_id}/cancel")

    def job_events(self, job_id: UUID, *, after_seq: int = 0) -> list[EventRead]:
        """The job's history after ``after_seq``, oldest first (every page)."""
        return list(self._all(EventRead, f"/v1/jobs/{job_id}/events", {"after_seq": after_seq}))

    def wait_job(self, job_id: UUID, timeout_s: float | None = None) -> JobRead:
        """The job once finished, or as it is when ``timeout_s`` has passed (None: no limit).

        Check ``.finished`` (or ``.status``) on the result. Each call to the server long-polls
        for at most a minute, so no proxy times out a quiet connection.
        """
        wait = JobWait(timeout_s)
        while True:
            job = self._one(JobRead, "GET", f"/v1/jobs/{job_id}/wait", **wait.next_call())
            if job.finished or wait.over():
                return job

    # -- logs -----------------------------------------------------------------------------

    def job_logs(
        self, job_id: UUID, *, attempt: int | None = None, after_seq: int = -1, limit_bytes: int | None = None
    ) -> LogPageOut:
        """One page of an attempt's output (default: the job's current attempt) after ``after_seq``."""
        params = {"attempt": attempt, "after_seq": after_seq, "limit_bytes": limit_bytes}
        return self._one(LogPageOut, "GET", f"/v1/jobs/{job_id}/logs", params=params)

    def iter_job_logs(self, job_id: UUID, *, attempt: int | None = None, after_seq: int = -1) -> Iterator[LogEntryOut]:
        """Every chunk of one attempt stored so far, a page at a time; it does not wait for more
        (``follow_job_logs`` does). Decode ``data_b64`` for the exact bytes."""
        while True:
            page = self.job_logs(job_id, attempt=attempt, after_seq=after_seq)
            yield from page.chunks
            if page.complete or not page.chunks:
                return
            attempt, after_seq = page.attempt, page.last_seq  # stay on this attempt if a retry starts

    def follow_job_logs(
        self,
        job_id: UUID,
        *,
        attempt: int | None = None,
        after_seq: int = -1,
        reconnects: int = 10,
        backoff_s: float = 0.5,
    ) -> Iterator[LogEntryOut]:
        """Chunks as the job prints them (Server-Sent Events) until it finishes; without
        ``attempt`` across its retries. A dropped connection is resumed where it stopped
        (``Last-Event-ID``), up to ``reconnects`` times in a row, waiting longer each time."""
        last_id: str | None = None
        backoff = Backoff(backoff_s, cap=max(backoff_s, 10.0))  # reset by every entry that arrives
        params = present({"attempt": attempt, "after_seq": after_seq})
        timeout = httpx.Timeout(self._http.timeout.connect, read=FOLLOW_READ_TIMEOUT_S)
        while True:
            headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last_id} if last_id else {})}
            try:
                with self._http.stream(
                    "GET", f"/v1/jobs/{job_id}/logs/stream", params=params, headers=headers, timeout=timeout
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise api_error(response)
                    for sse in events(response.iter_text()):
                        if sse.event == "end":
                            return
                        if sse.event == "log":
                            entry = LogEntryOut.model_validate_json(sse.data)
                            last_id = sse.id or last_id
                            backoff.reset()
                            yield entry
            except httpx.TransportError:
                pass  # dropped (or never opened): resume below
            except GpufleetError as exc:
                if exc.status not in RETRY_STATUSES:
                    raise
            # also a stream that closed without its `end` event
            if backoff.failures >= reconnects:
                raise ServiceUnavailable(503, "Service Unavailable", f"the log stream of job {job_id} kept dropping")
            time.sleep(backoff.next())

    # -- quotas ---------------------------------------------------------------------------

    def list_quotas(self) -> list[QuotaRead]:
        return TypeAdapter(list[QuotaRead]).validate_python(self.request("GET", "/v1/quotas"))

    def set_quota(self, max_gpus: int, gpu_model: str | None = None) -> QuotaRead:
        """Create or replace the quota for ``gpu_model`` (None: all GPUs together)."""
        return self._one(QuotaRead, "PUT", "/v1/quotas", json={"gpu_model": gpu_model, "max_gpus": max_gpus})

    def delete_quota(self, quota_id: UUID) -> None:
        self.request("DELETE", f"/v1/quotas/{quota_id}")
