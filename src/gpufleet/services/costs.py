"""Prices and usage as use cases (docs/costs.md). Roles are checked by the HTTP layer.

A price change is a new row effective from its time (now, or a time to come): what ran before
keeps the price it ran at. An organization has one currency. Usage reads closed cost rows plus
the live accrual of running work, grouped as asked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from uuid import UUID

from gpufleet.db.pool import Connection, Database
from gpufleet.domain.costs import MICRO, Price, PriceKind, UsageRow
from gpufleet.domain.jobs import JobSpec, gpu_type_tokens
from gpufleet.domain.tenancy import TenantContext
from gpufleet.errors import Conflict, InvalidInput, NotFound
from gpufleet.repo import costs as repo
from gpufleet.repo import events

MAX_PRICE = Decimal("99999999.9999")  # numeric(12, 4)
GROUPS = ("day", "user", "job", "model", "host")
_SINCE = re.compile(r"^(\d{1,4})([hdw])$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$")


def parse_amount(value: object, field: str, *, places: int = 4, maximum: Decimal = MAX_PRICE) -> Decimal:
    """A non-negative decimal amount (a string or number), at most ``places`` decimals."""
    try:
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise InvalidInput(f"{field} must be a decimal number such as 1.89", field=field) from None
    if not amount.is_finite() or amount < 0 or amount > maximum:
        raise InvalidInput(f"{field} must be from 0 to {maximum}", field=field)
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        raise InvalidInput(f"{field} has more than {places} decimals", field=field)
    return amount


def parse_since(value: str | datetime | None, now: datetime) -> datetime:
    """``30d``, ``12h``, ``2w`` back from ``now``, or an ISO time; default 30 days."""
    if value is None:
        return now - timedelta(days=30)
    if isinstance(value, datetime):
        return value
    m = _SINCE.match(value.strip())
    if m:
        n, unit = int(m.group(1)), m.group(2)
        return now - {"h": timedelta(hours=n), "d": timedelta(days=n), "w": timedelta(weeks=n)}[unit]
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput("since must be like 30d, 12h, 2w or an ISO 8601 time", field="since") from None
    if parsed.tzinfo is None:
        raise InvalidInput("since needs a time zone (e.g. 2026-11-01T00:00:00Z)", field="since")
    return parsed


def check_group(by: str) -> str:
    if by in GROUPS:
        return by
    if by.startswith("label:") and _LABEL_KEY.match(by.removeprefix("label:")):
        return by
    raise InvalidInput(f"by must be one of {', '.join(GROUPS)} or label:KEY", field="by")


async def set_price(
    db: Database,
    ctx: TenantContext,
    *,
    kind: PriceKind,
    gpu_model: str | None,
    hourly_price: Decimal,
    currency: str = "USD",
    host_id: UUID | None = None,
    effective_from: datetime | None = None,
) -> Price:
    """A price change from ``effective_from`` (default now; never in the past: closed costs stay)."""
    if kind is PriceKind.GPU:
        model = (gpu_model or "").strip()
        if not model or len(model) > 100 or not gpu_type_tokens(model):
            raise InvalidInput("gpu_model must name a GPU model (e.g. 'A100-80GB')", field="gpu_model")
    elif gpu_model is not None:
        raise InvalidInput(f"a {kind.value} price has no gpu_model", field="gpu_model")
    else:
        model = None
    if not _CURRENCY.match(currency):
        raise InvalidInput("currency must be a three-letter ISO 4217 code such as USD", field="currency")
    if effective_from is not None and effective_from.tzinfo is None:
        raise InvalidInput("effective_from needs a time zone", field="effective_from")
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        if effective_from is not None and effective_from < await repo.db_now(conn):
            raise InvalidInput("effective_from cannot be in the past: costs already metered keep their price")
        current = await repo.currency(conn, org_id=org_id)
        if current is not None and current != currency:
            raise Conflict(f"this organization's prices are in {current}; one currency per organization")
        if host_id is not None and not await repo.host_exists(conn, org_id=org_id, host_id=host_id):
            raise NotFound(f"host {host_id} not found")
        price = await repo.add_price(
            conn,
            org_id=org_id,
            kind=kind,
            gpu_model=model,
            host_id=host_id,
            hourly_price=hourly_price,
            currency=currency,
            effective_from=effective_from,
            set_by=ctx.actor,
        )
        await events.record(
            conn,
            ctx,
            "organization",
            org_id,
            "price.set",
            {
                "kind": kind.value,
                "gpu_model": model,
                "host_id": str(host_id) if host_id else None,
                "hourly_price": str(hourly_price),
                "currency": currency,
                "effective_from": price.effective_from.isoformat(),
            },
        )
        return price


async def list_prices(db: Database, ctx: TenantContext, *, history: bool = False) -> list[Price]:
    async with db.transaction(ctx.org_id) as conn:
        return await repo.list_prices(conn, org_id=ctx.org_id, history=history)


async def usage(
    db: Database, ctx: TenantContext, *, by: str = "model", since: str | datetime | None = None
) -> tuple[list[UsageRow], datetime, str]:
    """(rows, the start used, the currency) of usage since ``since``, grouped ``by``."""
    group = check_group(by)
    org_id = ctx.org_id
    async with db.transaction(org_id) as conn:
        start = parse_since(since, await repo.db_now(conn))
        rows = await repo.usage(conn, org_id=org_id, by=group, since=start)
        currency = await repo.currency(conn, org_id=org_id) or "USD"
    return rows, start, currency


async def job_costs(conn: Connection, org_id: UUID, job_ids: list[UUID]) -> dict[UUID, Decimal]:
    return await repo.job_costs(conn, org_id=org_id, job_ids=job_ids)


def _matching(models: Mapping[str, Decimal], wanted: Sequence[str]) -> list[Decimal]:
    if not wanted:
        return list(models.values())
    tokens = [frozenset(gpu_type_tokens(w)) for w in wanted]
    return [p for m, p in models.items() if any(t and t <= frozenset(gpu_type_tokens(m)) for t in tokens)]


async def estimate(conn: Connection, org_id: UUID, spec: JobSpec) -> Decimal | None:
    """A job's expected cost: ``max_runtime_s`` at today's price of the dearest GPU it may land on.

    None without ``max_runtime_s`` (it is unbounded: a hard budget then admits it while anything
    is left). Fixed at submission; rounded up to the micro-unit so it never underestimates.
    """
    if spec.max_runtime_s is None:
        return None
    gpus, cpu, ram = await repo.current_rates(conn, org_id=org_id)
    gpu = spec.gpu
    gpu_price = max(_matching(gpus, gpu.models), default=Decimal(0)) if gpu.count else Decimal(0)
    rate = (
        Decimal(gpu.total_milli) / 1000 * gpu_price
        + Decimal(spec.cpu_milli) / 1000 * cpu
        + Decimal(spec.ram_mb) / 1024 * ram
    )
    return (rate * spec.max_runtime_s / 3600).quantize(MICRO, rounding="ROUND_CEILING")
