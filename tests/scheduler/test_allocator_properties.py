"""Properties of ClusterState under random hosts, jobs and releases (hypothesis)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpufleet.scheduler.allocator import ClusterState, make_policy
from gpufleet.scheduler.model import GpuState, HostState, JobRequest, Placement

MODELS = ["A100-80GB", "T4", "V100"]
MEMORY = {"A100-80GB": 81920, "T4": 16384, "V100": 0}  # V100: memory not reported


@st.composite
def hosts(draw: st.DrawFn) -> list[HostState]:
    out = []
    for n in range(draw(st.integers(1, 6))):
        gpus = []
        for g in range(draw(st.integers(0, 8))):
            model = draw(st.sampled_from(MODELS))
            status = draw(st.sampled_from(["available"] * 5 + ["unhealthy"]))
            gpus.append(GpuState(f"h{n}/g{g}", model, MEMORY[model], status=status))
        cpu = draw(st.integers(0, 64)) * 1000
        ram = draw(st.integers(0, 8)) * 16384
        status = draw(st.sampled_from(["ready"] * 5 + ["draining"]))
        out.append(HostState(f"h{n}", f"h{n}", cpu, cpu, ram, ram, tuple(gpus), status))
    return out


@st.composite
def jobs(draw: st.DrawFn, n: int) -> JobRequest:
    count = draw(st.sampled_from([0, 1, 1, 1, 2, 4, 8]))
    milli = draw(st.sampled_from([100, 250, 330, 500, 810, 1000])) if count == 1 else 1000
    return JobRequest(
        f"j{n}",
        gpu_count=count,
        gpu_milli=milli if count else 0,
        memory_min_mib=draw(st.sampled_from([0, 0, 4096, 20000])),
        gpu_models=frozenset(draw(st.sets(st.sampled_from(MODELS), max_size=2))),
        cpu_milli=draw(st.integers(0, 16)) * 1000,
        ram_mb=draw(st.sampled_from([0, 1024, 32768])),
    )


def check_invariants(
    cluster: ClusterState, original: list[HostState], running: dict[str, JobRequest], placements: list[Placement]
) -> None:
    by_host = {h.id: h for h in original}
    for h in cluster.snapshot():
        assert 0 <= h.cpu_milli_free <= h.cpu_milli_total
        assert 0 <= h.ram_mb_free <= h.ram_mb_total
        for g in h.gpus:
            assert 0 <= g.free_milli <= 1000
            assert 0 <= g.free_memory_mib <= g.memory_mib
    for p in placements:
        job = running[p.job_id]
        host = by_host[p.host_id]
        assert host.status == "ready"
        assert len(p.gpus) == job.gpu_count
        assert len({s.gpu_id for s in p.gpus}) == job.gpu_count
        gpus = {g.id: g for g in host.gpus}
        for share in p.gpus:
            gpu = gpus[share.gpu_id]
            assert gpu.status == "available"
            assert share.milli == job.gpu_milli
            assert not job.gpu_models or gpu.model in job.gpu_models
            assert gpu.memory_mib == 0 or gpu.memory_mib >= job.memory_min_mib
    allocated = sum(p.gpu_milli for p in placements)
    assert cluster.allocated_gpu_milli == allocated


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    snapshot=hosts(),
    requests=st.lists(st.integers(0, 10_000), min_size=1, max_size=40),
    policy=st.sampled_from(["default", "best-fit", "fgd", "random"]),
    data=st.data(),
)
def test_random_placements_and_releases_keep_capacity_exact(
    snapshot: list[HostState], requests: list[int], policy: str, data: st.DataObject
) -> None:
    cluster = ClusterState(snapshot)
    chosen = make_policy(policy, seed=1)
    running: dict[str, JobRequest] = {}
    placements: list[Placement] = []
    for n, action in enumerate(requests):
        if action % 4 == 0 and placements:
            # release a random running job
            victim = placements.pop(data.draw(st.integers(0, len(placements) - 1)))
            cluster.release(victim)
            del running[victim.job_id]
        else:
            job = data.draw(jobs(n))
            result = cluster.place(job, chosen)
            if isinstance(result, Placement):
                running[job.id] = job
                placements.append(result)
            else:
                assert result.reasons
                assert result.job_id == job.id
                # an unschedulable verdict means no host fits now
                assert not any(cluster.options(h, job) for h in cluster.hosts)
        check_invariants(cluster, snapshot, running, placements)
    for p in reversed(placements):
        cluster.release(p)
    assert cluster.snapshot() == snapshot
    assert cluster.allocated_gpu_milli == 0


@settings(max_examples=40, deadline=None)
@given(snapshot=hosts(), job=jobs(0))
def test_placed_whenever_some_host_fits(snapshot: list[HostState], job: JobRequest) -> None:
    cluster = ClusterState(snapshot)
    fits = any(cluster.options(h, job) for h in cluster.hosts)
    result = cluster.place(job, make_policy("default"))
    assert isinstance(result, Placement) == fits


@settings(max_examples=40, deadline=None)
@given(snapshot=hosts(), job=jobs(0))
def test_never_means_no_empty_host_could_hold_it(snapshot: list[HostState], job: JobRequest) -> None:
    empty = ClusterState(
        [
            HostState(
                h.id,
                h.name,
                h.cpu_milli_total,
                h.cpu_milli_total,
                h.ram_mb_total,
                h.ram_mb_total,
                tuple(GpuState(g.id, g.model, g.memory_mib) for g in h.gpus),
            )
            for h in snapshot
        ]
    )
    result = ClusterState(snapshot).place(job, make_policy("best-fit"))
    if not isinstance(result, Placement) and result.never:
        assert not any(empty.options(h, job) for h in empty.hosts)
