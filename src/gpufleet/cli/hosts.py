"""`gpufleet hosts|gpus|fleet`: GPU hosts, their GPUs and metrics, join tokens, through the SDK."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import typer

from gpufleet.cli.common import console, usage
from gpufleet.cli.jobs import gpu_amount
from gpufleet.cli.remote import JsonOpt, WideOpt, act_on, client, dump, id_arg, resolve, show, show_list
from gpufleet.domain.hosts import GpuStatus, HostStatus, MetricAgg, MetricBucket
from gpufleet.schemas.hosts import GpuRead, HostRead
from gpufleet.sdk import Client

hosts = typer.Typer(help="GPU hosts of the current organization.", no_args_is_help=True)
gpus = typer.Typer(help="GPUs of the current organization's hosts.", no_args_is_help=True)

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
HOST_COLUMNS = ["name", "id", "status", "kind", "cpu_cores", "ram_gb", "last_heartbeat_at", "status_reason"]
GPU_COLUMNS = ["id", "host", "index", "model", "memory_gb", "status", "kind", "allocated", "foreign_usage"]


def register(app: typer.Typer) -> None:
    app.add_typer(hosts, name="hosts")
    app.add_typer(gpus, name="gpus")
    app.command("fleet")(fleet)


def parse_duration(text: str, option: str) -> timedelta:
    """``90s``, ``30m``, ``24h``, ``7d``."""
    match = _DURATION.match(text.strip().lower())
    if match is None:
        usage(f"{option} {text!r}: expected a number and a unit, e.g. 30m, 24h or 7d")
    return timedelta(seconds=float(match[1]) * _UNITS[match[2]])


def _kind(simulated: bool) -> str:
    return "SIMULATED" if simulated else "real"


def host_row(h: HostRead) -> dict[str, Any]:
    return {**dump(h), "kind": _kind(h.simulated), "ram_gb": round(h.ram_mb / 1024)}


def gpu_row(g: GpuRead, host_names: dict[UUID, str]) -> dict[str, Any]:
    return {
        **dump(g),
        "host": host_names.get(g.host_id, str(g.host_id)),
        "kind": _kind(g.simulated),
        "memory_gb": round(g.memory_mb / 1024, 1),
        "allocated": gpu_amount(g.allocated_milli) if g.allocated_milli else "-",
    }


# ---------------------------------------------------------------- hosts


@hosts.command("join-token")
def hosts_join_token(
    max_uses: int = typer.Option(None, "--max-uses", min=1, help="Registrations allowed (default: unlimited)."),
    expires: str = typer.Option("24h", "--expires", help="Lifetime, e.g. 30m, 24h, 7d (at most 365d)."),
    name: str = typer.Option("", "--name", help="A note for admins."),
    as_json: bool = JsonOpt,
) -> None:
    """Create a join token and print the command that registers a host with it (token shown once)."""
    hours = parse_duration(expires, "--expires").total_seconds() / 3600
    with client() as c:
        created = c.create_join_token(name, max_uses=max_uses, expires_in_hours=hours)
        url = c.url
    if as_json:
        show(created, True)
        return
    uses = "unlimited uses" if created.max_uses is None else f"{created.max_uses} use(s)"
    expires_at = f"{created.expires_at:%Y-%m-%d %H:%M %Z}"
    console.print(f"join token {created.prefix}… ({created.id}), {uses}, expires {expires_at}", highlight=False)
    console.print(f"token (shown once): {created.token}", highlight=False, soft_wrap=True)
    console.print("run this on the GPU host:", highlight=False)
    # In the environment, not argv: a token on the command line is visible to every user in `ps`.
    command = f"GPUFLEET_JOIN_TOKEN={created.token} gpufleet agent --server {url}"
    console.print(f"  {command}", highlight=False, soft_wrap=True)


@hosts.command("join-tokens")
def hosts_join_tokens(
    all_: bool = typer.Option(False, "--all", help="Also revoked, expired and used-up tokens."),
    wide: bool = WideOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List join tokens (usable ones by default)."""
    with client() as c:
        tokens = c.list_join_tokens(include_inactive=all_)
    show(tokens, as_json, ["id", "name", "prefix", "uses", "max_uses", "expires_at", "revoked_at"], wide=wide)


@hosts.command("revoke-join-token")
def hosts_revoke_join_token(token_id: str = id_arg("join token"), as_json: bool = JsonOpt) -> None:
    """Revoke a join token: no more hosts can register with it."""
    act_on("join_token", token_id, Client.revoke_join_token, as_json, ["id", "prefix", "revoked_at"])


@hosts.command("list")
def hosts_list(
    status: HostStatus = typer.Option(None, "--status", help="Only hosts in this status."),
    removed: bool = typer.Option(False, "--removed", help="Include removed hosts."),
    wide: bool = WideOpt,
    as_json: bool = JsonOpt,
) -> None:
    """GPU hosts with their status and last heartbeat (ids shortened; --wide for whole ones)."""
    show_list(
        lambda c: c.list_hosts(status=status, include_removed=removed), as_json, host_row, HOST_COLUMNS, wide=wide
    )


@hosts.command("show")
def hosts_show(host_id: str = id_arg("host"), wide: bool = WideOpt, as_json: bool = JsonOpt) -> None:
    """A host with its GPUs."""
    with client() as c:
        host = c.get_host(resolve(c, "host", host_id))
    if as_json:
        show(host, True)
        return
    labels = ", ".join(f"{k}={v}" for k, v in host.labels.items()) or "-"
    console.print(
        f"{host.name} ({host.id}) {host.status}{' — ' + host.status_reason if host.status_reason else ''}"
        f"{'  [SIMULATED]' if host.simulated else ''}",
        highlight=False,
    )
    console.print(
        f"{host.os} {host.arch}, {host.cpu_cores} cores, {host.ram_mb // 1024} GiB RAM, driver "
        f"{host.driver_version or '-'}, agent {host.agent_version or '-'}; labels: {labels}; last heartbeat "
        f"{host.last_heartbeat_at or 'never'}",
        highlight=False,
    )
    show([gpu_row(g, {host.id: host.name}) for g in host.gpus], False, GPU_COLUMNS, wide=wide)


def _host_action(action: str, host_id: str, as_json: bool, **kw: Any) -> None:
    with client() as c:
        host = getattr(c, action)(resolve(c, "host", host_id), **kw)
    show(host_row(host) if not as_json else host, as_json, ["name", "id", "status", "kind", "status_reason"])


@hosts.command("drain")
def hosts_drain(
    host_id: str = id_arg("host"), reason: str = typer.Option(None, help="Why."), as_json: bool = JsonOpt
) -> None:
    """No new work on the host; what runs there finishes."""
    _host_action("drain_host", host_id, as_json, reason=reason)


@hosts.command("undrain")
def hosts_undrain(host_id: str = id_arg("host"), as_json: bool = JsonOpt) -> None:
    """A draining host takes new work again."""
    _host_action("undrain_host", host_id, as_json)


@hosts.command("maintenance")
def hosts_maintenance(
    host_id: str = id_arg("host"),
    off: bool = typer.Option(False, "--off", help="End maintenance (back to ready)."),
    reason: str = typer.Option(None, help="Why."),
    as_json: bool = JsonOpt,
) -> None:
    """Take a host out of service for maintenance (or, with --off, bring it back)."""
    _host_action("set_host_maintenance", host_id, as_json, on=not off, reason=reason)


@hosts.command("revoke")
def hosts_revoke(host_id: str = id_arg("host"), as_json: bool = JsonOpt) -> None:
    """Revoke the host's credential: its agent stops; it can register again with a join token."""
    _host_action("revoke_host", host_id, as_json)


@hosts.command("remove")
def hosts_remove(
    host_id: str = id_arg("host"), yes: bool = typer.Option(False, "--yes", help="Do not ask."), as_json: bool = JsonOpt
) -> None:
    """Retire a host (refused while jobs run there); its history stays."""
    if not yes:
        typer.confirm(f"Remove host {host_id}?", abort=True)
    _host_action("remove_host", host_id, as_json)


# ---------------------------------------------------------------- GPUs


@gpus.command("list")
def gpus_list(
    model: str = typer.Option(None, "--model", help="Part of the model name, any case."),
    status: GpuStatus = typer.Option(None, "--status"),
    host: str = typer.Option(None, "--host", help="Host id (or any unique start of it)."),
    wide: bool = WideOpt,
    as_json: bool = JsonOpt,
) -> None:
    """GPUs of every host, with what is allocated on each."""
    with client() as c:
        found = c.list_gpus(model=model, status=status, host_id=resolve(c, "host", host) if host else None)
        names = {h.id: h.name for h in c.list_hosts()} if found and not as_json else {}
    if as_json:
        show(found, True)
        return
    show([gpu_row(g, names) for g in found], False, GPU_COLUMNS, wide=wide)


@gpus.command("show")
def gpus_show(gpu_id: str = id_arg("GPU"), wide: bool = WideOpt, as_json: bool = JsonOpt) -> None:
    """One GPU in full: UUID, PCI bus, status, price."""
    with client() as c:
        gpu = c.get_gpu(resolve(c, "gpu", gpu_id))
        name = c.get_host(gpu.host_id).name if not as_json else ""
    if as_json:
        show(gpu, True)
        return
    row = gpu_row(gpu, {gpu.host_id: name})
    show(row, False, [*GPU_COLUMNS, "uuid", "pci_bus_id", "status_reason", "hourly_price", "last_seen_at"], wide=wide)


@gpus.command("maintenance")
def gpus_maintenance(
    gpu_id: str = id_arg("GPU"),
    off: bool = typer.Option(False, "--off", help="Back into service."),
    reason: str = typer.Option(None),
    as_json: bool = JsonOpt,
) -> None:
    """Take a GPU out of service (or, with --off, bring it back)."""
    columns = ["id", "uuid", "status", "status_reason"]
    act_on("gpu", gpu_id, lambda c, full: c.set_gpu_maintenance(full, not off, reason), as_json, columns)


@gpus.command("clear-health")
def gpus_clear_health(gpu_id: str = id_arg("GPU"), as_json: bool = JsonOpt) -> None:
    """Declare an unhealthy GPU fit again."""
    act_on("gpu", gpu_id, Client.clear_gpu_health, as_json, ["id", "uuid", "status"])


@gpus.command("metrics")
def gpus_metrics(
    gpu_id: str = id_arg("GPU"),
    since: str = typer.Option("1h", "--since", help="How far back, e.g. 15m, 1h, 7d."),
    bucket: MetricBucket = typer.Option(MetricBucket.MINUTE, "--bucket", help="raw, 1m, 5m or 1h."),
    agg: MetricAgg = typer.Option(MetricAgg.AVG, "--agg", help="avg or max per bucket."),
    as_json: bool = JsonOpt,
) -> None:
    """One GPU's utilization, memory, temperature and power over time."""
    end = datetime.now(UTC)
    start = end - parse_duration(since, "--since")
    with client() as c:
        series = c.gpu_metrics(resolve(c, "gpu", gpu_id), start=start, end=end, bucket=bucket.value, agg=agg.value)
    if as_json:
        show(series, True)
        return
    rows = [
        {
            "ts": f"{p.ts:%Y-%m-%d %H:%M:%S}",
            "util_pct": _num(p.utilization_pct),
            "memory_mb": _num(p.memory_used_mb),
            "temp_c": _num(p.temperature_c),
            "power_w": _num(p.power_w),
            "samples": p.samples,
        }
        for p in series.points
    ]
    title = f"GPU {gpu_id}: {series.bucket} {series.agg if series.bucket != 'raw' else ''} ({len(rows)} points)"
    if not rows:
        console.print(f"{title}: no samples in this range")
        return
    show(rows, False, ["ts", "util_pct", "memory_mb", "temp_c", "power_w", "samples"], title=title)
    if series.truncated:
        console.print("(more samples exist: narrow the range or use a bucket)")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


# ---------------------------------------------------------------- fleet


def fleet(
    window: int = typer.Option(15, "--window", min=1, max=1440, help="Minutes averaged."), as_json: bool = JsonOpt
) -> None:
    """The organization's fleet at a glance: hosts and GPUs by status, models, recent load."""
    with client() as c:
        s = c.fleet_summary(window)
    if as_json:
        show(s, True)
        return
    by = ", ".join(f"{k} {v}" for k, v in sorted(s.hosts_by_status.items())) or "none"
    console.print(f"hosts: {s.hosts_total} ({by})", highlight=False)
    by = ", ".join(f"{k} {v}" for k, v in sorted(s.gpus_by_status.items())) or "none"
    sim = f", {s.gpus_simulated} SIMULATED" if s.gpus_simulated else ""
    console.print(f"GPUs: {s.gpus_total} ({by}){sim}", highlight=False)
    util = "-" if s.avg_utilization_pct is None else f"{s.avg_utilization_pct:.1f}%"
    console.print(
        f"last {s.window_minutes} min: average utilization {util} over {s.samples_in_window} samples; "
        f"foreign usage on {s.gpus_with_foreign_usage} GPU(s)",
        highlight=False,
    )
    if s.gpus_by_model:
        rows = [{"model": m.model, "count": m.count, "simulated": m.simulated} for m in s.gpus_by_model]
        show(rows, False, ["model", "count", "simulated"])
