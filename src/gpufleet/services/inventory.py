"""Pure rules for what an agent reports: validation, inventory reconciliation, GPU health, truth check.

No I/O: the heartbeat and registration services read the GPU rows, ask ``plan`` what changes,
and write only that. Rules (docs/hosts.md):

* a known GPU missing from the report goes ``offline`` ("not reported by host") if it was in
  service; when reported again it returns to service by itself. Unhealthy and maintenance GPUs
  keep their status (an admin owns them).
* a GPU in service becomes ``unhealthy`` when its XID error count rises, when it reports
  uncorrected ECC errors, or when its temperature exceeds the limit. Only an admin clears it.
* truth check: a GPU the ledger holds free (``allocated_milli = 0``) whose latest sample shows
  memory above the threshold or processes is flagged in ``foreign_usage``; the flag clears when
  a sample no longer shows it. The text is written when the flag turns on, not on every sample,
  so steady heartbeats do not rewrite GPU rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from gpufleet import states
from gpufleet.domain.hosts import (
    NOT_REPORTED,
    GpuDetail,
    GpuSample,
    GpuStatus,
    HeartbeatPolicy,
    HostFacts,
    ReportedGpu,
    SampleSeries,
)
from gpufleet.errors import InvalidInput
from gpufleet.limits import BIGINT_MAX, INT32_MAX

# Placeholders for a GPU not inserted yet; the database assigns the real values.
_NO_ID = UUID(int=0)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

IN_SERVICE = frozenset({GpuStatus.AVAILABLE, GpuStatus.ALLOCATED})
_MAX_TEXT = 200


def _bad(path: str, message: str) -> InvalidInput:
    """Agents read these as sentences ("gpus[0].uuid is listed twice"), unlike ``InvalidInput.at``."""
    return InvalidInput(f"{path} {message}", field=path)


def _text(value: str | None, path: str, *, required: bool = False, limit: int = _MAX_TEXT) -> None:
    if value is None:
        if required:
            raise _bad(path, "is required")
        return
    if required and not value.strip():
        raise _bad(path, "must not be empty")
    if len(value) > limit:
        raise _bad(path, f"must be at most {limit} characters, got {len(value)}")
    if not value.isprintable():
        raise _bad(path, "must be printable text")


def _int(value: int | None, path: str, lo: int, hi: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _bad(path, f"must be an integer between {lo} and {hi}, got {value!r}")


def _num(value: float | None, path: str, lo: float, hi: float) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise _bad(path, f"must be a number between {lo:g} and {hi:g}, got {value!r}")


def validate_facts(facts: HostFacts, path: str = "facts") -> None:
    _text(facts.hostname, f"{path}.hostname", required=True, limit=253)
    for name in ("os", "kernel", "arch", "driver_version", "cuda_version", "agent_version"):
        _text(getattr(facts, name), f"{path}.{name}")
    _int(facts.cpu_cores, f"{path}.cpu_cores", 0, 1_000_000)
    _int(facts.ram_mb, f"{path}.ram_mb", 0, BIGINT_MAX)


def validate_gpus(gpus: Sequence[ReportedGpu], policy: HeartbeatPolicy) -> None:
    if len(gpus) > policy.max_gpus:
        raise _bad("gpus", f"lists {len(gpus)} GPUs; at most {policy.max_gpus} per host")
    seen: set[str] = set()
    for i, g in enumerate(gpus):
        p = f"gpus[{i}]"
        _text(g.uuid, f"{p}.uuid", required=True, limit=128)
        if g.uuid in seen:
            raise _bad(f"{p}.uuid", f"{g.uuid!r} is listed twice")
        seen.add(g.uuid)
        _int(g.index, f"{p}.index", 0, 4095)
        _text(g.model, f"{p}.model", required=True)
        _int(g.memory_mb, f"{p}.memory_mb", 1, INT32_MAX)
        _text(g.pci_bus_id, f"{p}.pci_bus_id", limit=64)
        _text(g.driver_version, f"{p}.driver_version")


def validate_samples(samples: Sequence[GpuSample], policy: HeartbeatPolicy) -> tuple[datetime, datetime] | None:
    """Sizes and ranges of every sample; the earliest and latest timestamps (None: no samples)."""
    if len(samples) > policy.max_samples:
        raise _bad("samples", f"holds {len(samples)} samples; at most {policy.max_samples} per heartbeat")
    if not samples:
        return None
    lo = hi = samples[0].ts
    for i, s in enumerate(samples):
        ts = s.ts
        if not isinstance(ts, datetime) or ts.tzinfo is None or ts.utcoffset() is None:
            raise _bad(f"samples[{i}].ts", "must be a timezone-aware timestamp")
        if ts < lo:
            lo = ts
        elif ts > hi:
            hi = ts
        if not isinstance(s.uuid, str) or not 0 < len(s.uuid) <= 128:
            raise _bad(f"samples[{i}].uuid", "must be a GPU uuid of 1 to 128 characters")
        u, m, t, w = s.utilization_pct, s.memory_used_mb, s.temperature_c, s.power_w
        # One cheap test for the common case; the precise message only when something is off.
        if (
            (u is not None and not 0 <= u <= 100)
            or (m is not None and not 0 <= m <= INT32_MAX)
            or (t is not None and not -100 <= t <= 300)
            or (w is not None and not 0 <= w <= 100_000)
            or (s.ecc_uncorrected is not None and not 0 <= s.ecc_uncorrected <= BIGINT_MAX)
            or (s.xid_errors is not None and not 0 <= s.xid_errors <= BIGINT_MAX)
            or (s.process_count is not None and not 0 <= s.process_count <= INT32_MAX)
        ):
            p = f"samples[{i}]"
            _num(u, f"{p}.utilization_pct", 0, 100)
            _int(m, f"{p}.memory_used_mb", 0, INT32_MAX)
            _num(t, f"{p}.temperature_c", -100, 300)
            _num(w, f"{p}.power_w", 0, 100_000)
            _int(s.ecc_uncorrected, f"{p}.ecc_uncorrected", 0, BIGINT_MAX)
            _int(s.xid_errors, f"{p}.xid_errors", 0, BIGINT_MAX)
            _int(s.process_count, f"{p}.process_count", 0, INT32_MAX)
        for name, v in (("utilization_pct", u), ("temperature_c", t), ("power_w", w)):
            if isinstance(v, float) and not math.isfinite(v):
                raise _bad(f"samples[{i}].{name}", "must be a finite number")
    return lo, hi


def check_sample_times(
    series: Sequence[SampleSeries], span: tuple[datetime, datetime] | None, now: datetime, policy: HeartbeatPolicy
) -> None:
    """Every timestamp within ``max_clock_skew_s`` of the database clock ``now`` (``span``: the
    earliest and latest; the samples are walked only to name one that is off)."""
    if span is None:
        return
    skew = timedelta(seconds=policy.max_clock_skew_s)
    if now - skew <= span[0] and span[1] <= now + skew:
        return
    for i, s in enumerate(flatten(series)):
        if abs(s.ts - now) > skew:
            raise _bad(
                f"samples[{i}].ts",
                f"is {s.ts.isoformat()}, more than {policy.max_clock_skew_s} s from the server's clock "
                f"({now.isoformat()}); check the host's clock (NTP)",
            )


# Per column: (lowest, highest) allowed; the fast check of whole columns below.
_RANGES = {
    "utilization_pct": (0, 100),
    "memory_used_mb": (0, INT32_MAX),
    "temperature_c": (-100, 300),
    "power_w": (0, 100_000),
    "ecc_uncorrected": (0, BIGINT_MAX),
    "xid_errors": (0, BIGINT_MAX),
    "process_count": (0, INT32_MAX),
}


def flatten(series: Sequence[SampleSeries]) -> list[GpuSample]:
    return [s for one in series for s in one.samples()]


def validate_series(series: Sequence[SampleSeries], policy: HeartbeatPolicy) -> tuple[datetime, datetime] | None:
    """``validate_samples`` for column-wise samples: whole columns at once (min, max, sum in C),
    and only a report that fails is walked sample by sample, for the same message and field."""
    total = sum(len(one.ts) for one in series)
    if total > policy.max_samples:
        raise _bad("samples", f"holds {total} samples; at most {policy.max_samples} per heartbeat")
    if not total:
        return None
    span = _fast_span(series)
    return span if span is not None else validate_samples(flatten(series), policy)


def _fast_span(series: Sequence[SampleSeries]) -> tuple[datetime, datetime] | None:
    """The earliest and latest timestamps when every sample is plainly valid; None: look closer."""
    lo: datetime | None = None
    hi: datetime | None = None
    try:
        for one in series:
            if not isinstance(one.uuid, str) or not 0 < len(one.uuid) <= 128:
                return None
            if not one.ts:
                continue
            first, last = min(one.ts), max(one.ts)  # naive among aware raises TypeError
            if not isinstance(first, datetime) or first.utcoffset() is None or last.utcoffset() is None:
                return None
            lo = first if lo is None or first < lo else lo
            hi = last if hi is None or last > hi else hi
            for name, (low, high) in _RANGES.items():
                col = getattr(one, name)
                if col is None:
                    continue
                if len(col) != len(one.ts):
                    return None
                if None in col:
                    col = [v for v in col if v is not None]
                    if not col:
                        continue
                total = sum(col)
                if total != total or min(col) < low or max(col) > high:  # NaN, or out of range
                    return None
    except TypeError:
        return None
    return (lo, hi) if lo is not None and hi is not None else None


@dataclass(slots=True)
class Plan:
    """What a report changes: GPUs to insert (state decided), GPUs to rewrite, events by GPU uuid."""

    new: list[GpuDetail] = field(default_factory=list)
    changed: list[GpuDetail] = field(default_factory=list)
    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (uuid, type, data)

    @property
    def empty(self) -> bool:
        return not self.new and not self.changed


@dataclass(frozen=True, slots=True)
class _Assessment:
    causes: list[str]
    xid_last: int | None
    foreign: str | None
    sampled: bool


def _assess(
    samples: list[GpuSample], xid_prev: int | None, allocated_milli: int, policy: HeartbeatPolicy
) -> _Assessment:
    causes: list[str] = []
    xid = xid_prev
    ecc = 0
    hottest: float | None = None
    samples.sort(key=lambda s: s.ts)
    for s in samples:
        if s.xid_errors is not None:
            if s.xid_errors > (xid or 0) and not any(c.startswith("XID") for c in causes):
                causes.append(f"XID errors rose from {xid or 0} to {s.xid_errors}")
            xid = s.xid_errors  # a fall is an agent restart: the new count is the baseline
        if s.ecc_uncorrected is not None and s.ecc_uncorrected > ecc:
            ecc = s.ecc_uncorrected
        if s.temperature_c is not None and (hottest is None or s.temperature_c > hottest):
            hottest = s.temperature_c
    if ecc > 0:
        causes.append(f"{ecc} uncorrected ECC error{'s' if ecc != 1 else ''}")
    if hottest is not None and hottest > policy.temperature_limit_c:
        causes.append(f"temperature {hottest:g} C above the {policy.temperature_limit_c:g} C limit")
    foreign = None
    if samples and allocated_milli == 0:
        foreign = _foreign(samples[-1].memory_used_mb or 0, samples[-1].process_count or 0, policy)
    return _Assessment(causes, xid, foreign, bool(samples))


def _foreign(mem: int, procs: int, policy: HeartbeatPolicy) -> str | None:
    """The truth check on a free GPU's latest sample: what shows use gpufleet did not allocate."""
    parts = []
    if mem > policy.foreign_memory_threshold_mb:
        parts.append(f"{mem} MiB in use")
    if procs > 0:
        parts.append(f"{procs} process{'es' if procs != 1 else ''}")
    return f"{' and '.join(parts)} while gpufleet has nothing allocated" if parts else None


def _back_in_service(gpu: GpuDetail) -> GpuStatus:
    return GpuStatus.ALLOCATED if gpu.allocated_milli > 0 else GpuStatus.AVAILABLE


def _assess_series(
    series: list[SampleSeries], xid_prev: int | None, allocated_milli: int, policy: HeartbeatPolicy
) -> _Assessment:
    """``_assess`` on whole columns for the common case (steady XID count); otherwise sample by sample."""
    if not series:
        return _assess([], xid_prev, allocated_milli, policy)
    ts = [t for one in series for t in one.ts]
    col = {name: [v for one in series for v in one.column(name)] for name in ("xid_errors", "ecc_uncorrected")}
    xids = [v for v in col["xid_errors"] if v is not None]
    if xids and min(xids) != max(xids):  # the count moved within the report: order matters
        return _assess([s for one in series for s in one.samples()], xid_prev, allocated_milli, policy)
    causes: list[str] = []
    xid = xid_prev
    if xids:
        if xids[0] > (xid or 0):
            causes.append(f"XID errors rose from {xid or 0} to {xids[0]}")
        xid = xids[0]
    ecc = max([v for v in col["ecc_uncorrected"] if v is not None], default=0)
    if ecc > 0:
        causes.append(f"{ecc} uncorrected ECC error{'s' if ecc != 1 else ''}")
    temps = [v for one in series for v in one.column("temperature_c") if v is not None]
    hottest = max(temps) if temps else None
    if hottest is not None and hottest > policy.temperature_limit_c:
        causes.append(f"temperature {hottest:g} C above the {policy.temperature_limit_c:g} C limit")
    foreign = None
    if allocated_milli == 0:
        newest = max(ts)
        last = len(ts) - 1 - ts[::-1].index(newest)  # a stable sort by time puts this one last
        mem = [v for one in series for v in one.column("memory_used_mb")][last] or 0
        procs = [v for one in series for v in one.column("process_count")][last] or 0
        foreign = _foreign(mem, procs, policy)
    return _Assessment(causes, xid, foreign, True)


def _decide(
    before: GpuDetail, reported: ReportedGpu | None, samples: list[SampleSeries], policy: HeartbeatPolicy, plan: Plan
) -> GpuDetail:
    """The GPU's state after this report, and the events it causes (appended to ``plan``)."""
    after = before
    if reported is None:
        if before.status in IN_SERVICE:
            after = replace(after, status=GpuStatus.OFFLINE, status_reason=NOT_REPORTED)
    else:
        if (reported.index, reported.model, reported.pci_bus_id, reported.mig_mode, reported.driver_version) != (
            before.index,
            before.model,
            before.pci_bus_id,
            before.mig_mode,
            before.driver_version,
        ) or max(reported.memory_mb, before.allocated_memory_mb) != before.memory_mb:
            after = replace(
                after,
                index=reported.index,
                model=reported.model,
                memory_mb=max(reported.memory_mb, before.allocated_memory_mb),
                pci_bus_id=reported.pci_bus_id,
                mig_mode=reported.mig_mode,
                driver_version=reported.driver_version,
            )
        if before.status is GpuStatus.OFFLINE and before.status_reason == NOT_REPORTED:
            after = replace(after, status=_back_in_service(before), status_reason=None)
    a = _assess_series(samples, before.xid_errors_last, before.allocated_milli, policy)
    if a.causes and after.status in IN_SERVICE:
        after = replace(after, status=GpuStatus.UNHEALTHY, status_reason="; ".join(a.causes))
    if (a.xid_last or 0) != (before.xid_errors_last or 0):  # no count and zero mean the same
        after = replace(after, xid_errors_last=a.xid_last)
    if a.sampled and (a.foreign is None) != (before.foreign_usage is None):
        after = replace(after, foreign_usage=a.foreign)
        plan.events.append((before.uuid, "gpu.foreign_usage", {"foreign_usage": a.foreign}))
    if after.status is not before.status:
        states.check(states.GPU_TRANSITIONS, before.status, after.status, entity="GPU")
        data: dict[str, Any] = {"from": before.status.value, "to": after.status.value, "reason": after.status_reason}
        if after.status is GpuStatus.UNHEALTHY:
            data["causes"] = a.causes
        plan.events.append((before.uuid, f"gpu.{after.status.value}", data))
    return after


def plan(
    rows: Sequence[GpuDetail],
    reported: Sequence[ReportedGpu] | None,
    samples: Sequence[SampleSeries],
    policy: HeartbeatPolicy,
    *,
    seen_at: datetime | None,
) -> Plan:
    """Reconcile the stored GPUs ``rows`` with a report. ``reported=None``: inventory unchanged.

    Samples must name a GPU the host has or reports (InvalidInput otherwise). ``seen_at`` is
    the previous heartbeat's time: when a GPU going offline was last seen.
    """
    by_uuid = {r.uuid: r for r in rows}
    listed = {g.uuid: g for g in reported} if reported is not None else None
    per_gpu: dict[str, list[SampleSeries]] = {}
    i = 0  # the flat index of the series' first sample
    for one in samples:
        if one.ts and one.uuid not in by_uuid and (listed is None or one.uuid not in listed):
            raise _bad(f"samples[{i}].uuid", f"names GPU {one.uuid!r}, which this host neither has nor reports")
        if one.ts:
            per_gpu.setdefault(one.uuid, []).append(one)
        i += len(one.ts)
    out = Plan()
    for row in rows:
        if listed is None:
            rep: ReportedGpu | None = ReportedGpu(
                row.uuid, row.index, row.model, row.memory_mb, row.pci_bus_id, row.mig_mode, row.driver_version
            )
        else:
            rep = listed.get(row.uuid)
        after = _decide(row, rep, per_gpu.get(row.uuid, []), policy, out)
        if after != row:
            if rep is None and after.status is GpuStatus.OFFLINE and row.status is not GpuStatus.OFFLINE:
                after = replace(after, last_seen_at=seen_at)
            out.changed.append(after)
    for g in (listed or {}).values():
        if g.uuid in by_uuid:
            continue
        fresh = GpuDetail(
            id=_NO_ID,
            organization_id=_NO_ID,
            host_id=_NO_ID,
            uuid=g.uuid,
            index=g.index,
            model=g.model,
            memory_mb=g.memory_mb,
            pci_bus_id=g.pci_bus_id,
            mig_mode=g.mig_mode,
            driver_version=g.driver_version,
            status=GpuStatus.AVAILABLE,
            status_reason=None,
            simulated=g.simulated,
            hourly_price=None,
            allocated_milli=0,
            allocated_memory_mb=0,
            foreign_usage=None,
            xid_errors_last=None,
            version=0,
            last_seen_at=None,
            created_at=_EPOCH,
            updated_at=_EPOCH,
        )
        out.events.append(
            (g.uuid, "gpu.added", {"uuid": g.uuid, "index": g.index, "model": g.model, "memory_mb": g.memory_mb})
        )
        out.new.append(_decide(fresh, g, per_gpu.get(g.uuid, []), policy, out))
    return out
