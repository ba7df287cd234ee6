"""Exact placements and reasons on small hand-built clusters."""

from __future__ import annotations

import pytest

from gpufleet.scheduler.allocator import ClusterState, allocate, make_policy
from gpufleet.scheduler.fragmentation import Shape, Workload
from gpufleet.scheduler.model import GpuShare, GpuState, HostState, JobRequest, Placement, Unschedulable
from tests.scheduler.helpers import host, job

POLICY_NAMES = ["default", "best-fit", "fgd", "random"]


def test_two_gpus_on_a_host_with_one_free_is_unschedulable_naming_the_host() -> None:
    result = allocate(job(gpus=2), [host("a", free=1)])
    assert isinstance(result, Unschedulable)
    assert result.reasons == ("a: 1 GPU free, the job needs 2",)
    assert not result.never


def test_a_host_too_small_even_if_empty_is_described_by_its_size() -> None:
    result = allocate(job(gpus=3), [host("ag2", gpus=2, free=0), host("ag4", gpus=4, free=1)])
    assert isinstance(result, Unschedulable) and not result.never
    assert result.reasons == ("ag2: has 2 GPUs, the job needs 3", "ag4: 1 GPU free, the job needs 3")
    result = allocate(job(gpus=8), [host("ag2", gpus=2, free=0)])
    assert isinstance(result, Unschedulable) and result.never
    assert result.reasons == ("no host could ever hold 8 GPUs, even if empty", "ag2: has 2 GPUs, the job needs 8")


def test_whole_gpus_all_on_one_host() -> None:
    result = allocate(job(gpus=2, cpu=8000, ram=1024), [host("a", free=1), host("b", gpus=4, free=2)])
    assert result == Placement("j", "b", (GpuShare("b/g0", 1000, 81920), GpuShare("b/g1", 1000, 81920)), 8000, 1024)


@pytest.mark.parametrize("name", ["default", "best-fit", "fgd"])
def test_fractional_job_packs_onto_the_partly_used_gpu(name: str) -> None:
    # whole-GPU jobs arrive too, so breaking the idle GPU would cost more than using the shared one
    workload = Workload([Shape(0, 1, 300), Shape(0, 1, 1000)])
    hosts = [host("idle", gpus=1), host("shared", milli=[400, 0])]
    result = allocate(job(milli=300), hosts, make_policy(name, workload=workload))
    assert isinstance(result, Placement)
    assert (result.host_id, result.gpus) == ("shared", (GpuShare("shared/g0", 300, 24576),))


def test_fractional_job_reserves_its_memory_request() -> None:
    result = allocate(job(milli=250, memory_min_mib=10_000), [host("a", gpus=1)])
    assert isinstance(result, Placement)
    assert result.gpus == (GpuShare("a/g0", 250, 10_000),)


def test_fractional_job_needs_the_gpu_memory_free() -> None:
    # 600 milli free but only 8192 MiB of memory left on the shared GPU
    hosts = [HostState("a", "a", 8000, 8000, 0, 0, (GpuState("a/g0", "T4", 16384, 600, 8192),))]
    result = allocate(job(milli=300, memory_min_mib=10_000), hosts)
    assert isinstance(result, Unschedulable)


def test_gpu_model_constraint() -> None:
    hosts = [host("t4", model="T4", memory_mib=16384), host("a100", gpus=1)]
    result = allocate(job(models=("A100-80GB",)), hosts)
    assert isinstance(result, Placement) and result.host_id == "a100"
    missing = allocate(job(models=("H100",)), hosts)
    assert isinstance(missing, Unschedulable) and missing.never
    assert any("H100" in r for r in missing.reasons)


def test_gpu_memory_minimum_and_the_never_flag() -> None:
    hosts = [host(f"t{i}", model="T4", memory_mib=16384) for i in range(6)]
    result = allocate(job(memory_min_mib=40960), hosts)
    assert isinstance(result, Unschedulable) and result.never
    assert result.reasons[0] == "no host has a GPU with 40960 MiB memory (largest: 16384 MiB T4)"


def test_cpu_limit_blocks_and_is_explained() -> None:
    hosts = [host(f"h{i}", cpu=64_000, cpu_free=12_000) for i in range(6)]
    result = allocate(job(cpu=64_000), hosts)
    assert isinstance(result, Unschedulable) and not result.never
    assert result.reasons == ("needs 64 CPU cores free; most free on a fitting host: 12",)
    assert isinstance(allocate(job(cpu=12_000), hosts), Placement)


def test_many_hosts_summary_counts_hosts_by_free_gpus() -> None:
    hosts = [host(f"h{i}", gpus=4, free=1) for i in range(3)] + [host(f"k{i}", gpus=4, free=0) for i in range(4)]
    result = allocate(job(gpus=2, models=("A100-80GB",)), hosts)
    assert isinstance(result, Unschedulable)
    assert result.reasons == ("no ready host has 2 free A100-80GB GPUs; 3 hosts have 1",)


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_never_uses_a_host_that_is_not_ready(policy: str) -> None:
    hosts = [host("drain", status="draining"), host("busy", free=0)]
    result = allocate(job(), hosts, policy)
    assert isinstance(result, Unschedulable) and not result.never
    assert "drain: draining" in result.reasons


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_never_uses_an_unavailable_gpu(policy: str) -> None:
    hosts = [host("a", gpus=2, gpu_status={0: "unhealthy"})]
    result = allocate(job(), hosts, policy)
    assert isinstance(result, Placement) and result.gpus[0].gpu_id == "a/g1"
    assert isinstance(allocate(job(gpus=2), hosts, policy), Unschedulable)


def test_reasons_mention_unavailable_capacity_on_bigger_clusters() -> None:
    hosts = [host(f"busy{i}", free=0) for i in range(6)] + [host("sick", status="unhealthy")]
    result = allocate(job(), hosts)
    assert isinstance(result, Unschedulable)
    assert "sick is unhealthy" in result.reasons


def test_cpu_only_job_prefers_a_host_without_idle_gpus() -> None:
    hosts = [host("gpu-idle", gpus=2), host("gpu-full", free=0)]
    result = allocate(job(gpus=0, cpu=8000), hosts)
    assert result == Placement("j", "gpu-full", (), 8000, 0)


def test_best_fit_fills_the_fullest_host_first() -> None:
    hosts = [host("roomy", gpus=8), host("tight", gpus=8, free=2)]
    result = allocate(job(), hosts, "best-fit")
    assert isinstance(result, Placement) and result.host_id == "tight"


def test_default_keeps_whole_idle_hosts_for_multi_gpu_jobs() -> None:
    hosts = [host("idle8", gpus=8), host("half", gpus=8, free=4)]
    cluster = ClusterState(hosts)
    policy = make_policy("default")
    first = cluster.place(job(id="one"), policy)
    assert isinstance(first, Placement) and first.host_id == "half"
    big = cluster.place(job(gpus=8, id="eight"), policy)
    assert isinstance(big, Placement) and big.host_id == "idle8"


def test_place_apply_release_round_trip() -> None:
    cluster = ClusterState([host("a", gpus=2)])
    policy = make_policy("best-fit")
    p1 = cluster.place(job(milli=500, id="x", cpu=1000), policy)
    p2 = cluster.place(job(milli=500, id="y", cpu=1000), policy)
    assert isinstance(p1, Placement) and isinstance(p2, Placement)
    assert p1.gpus[0].gpu_id == p2.gpus[0].gpu_id  # packed on one GPU
    assert cluster.allocated_gpu_milli == 1000
    cluster.release(p1)
    cluster.release(p2)
    assert cluster.allocated_gpu_milli == 0
    assert cluster.snapshot() == [host("a", gpus=2)]
    with pytest.raises(ValueError, match="releasing more"):
        cluster.release(p1)


def test_apply_refuses_capacity_that_is_not_free() -> None:
    cluster = ClusterState([host("a", gpus=1)])
    taken = Placement("x", "a", (GpuShare("a/g0", 1000, 81920),), 0, 0)
    cluster.apply(taken)
    with pytest.raises(ValueError, match="not enough free"):
        cluster.apply(Placement("y", "a", (GpuShare("a/g0", 1, 0),), 0, 0))


def test_allocate_does_not_change_the_snapshot() -> None:
    hosts = [host("a")]
    allocate(job(), hosts)
    assert hosts == [host("a")]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gpu_count": 2, "gpu_milli": 500}, "fractional"),
        ({"gpu_count": 1, "gpu_milli": 0}, "1..1000"),
        ({"gpu_count": 1, "gpu_milli": 1001}, "1..1000"),
        ({"gpu_count": -1}, ">= 0"),
        ({"gpu_count": 0, "gpu_milli": 300}, "CPU-only"),
        ({"cpu_milli": -5}, ">= 0"),
    ],
)
def test_job_request_validation(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JobRequest("bad", **kwargs)


def test_unknown_policy_name() -> None:
    with pytest.raises(ValueError, match="unknown policy"):
        allocate(job(), [host("a")], "nope")


def test_explanations_in_one_cycle_follow_the_placements_made_in_it() -> None:
    # what suits a request is worked out once per cycle; what is free must still be read each time
    hosts = [host(f"h{i}", gpus=4, free=1) for i in range(3)] + [host(f"k{i}", gpus=4, free=0) for i in range(4)]
    cluster = ClusterState(hosts)
    policy = make_policy("default")
    two = job(gpus=2, models=("A100-80GB",))
    first = cluster.place(two, policy)
    assert isinstance(first, Unschedulable)
    assert first.reasons == ("no ready host has 2 free A100-80GB GPUs; 3 hosts have 1",)
    assert isinstance(cluster.place(job(id="one"), policy), Placement)
    again = cluster.place(two, policy)
    assert isinstance(again, Unschedulable)
    assert again.reasons == ("no ready host has 2 free A100-80GB GPUs; 2 hosts have 1",)
    assert isinstance(cluster.place(job(id="last whole"), policy), Placement)
    assert isinstance(cluster.place(job(milli=500, id="half"), policy), Placement)
    share = cluster.place(job(milli=700, id="share", models=("A100-80GB",)), policy)
    assert isinstance(share, Unschedulable)
    assert share.reasons[0].startswith("no ready host has a A100-80GB GPU with 0.7 GPU free (most free: 0.5 GPU on")
