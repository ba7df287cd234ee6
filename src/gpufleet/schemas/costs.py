"""Wire schemas of prices, usage and budgets. Money travels as decimal strings ("1.8900"), never floats."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from uuid import UUID

from pydantic import Field

from gpufleet.domain.costs import BudgetPeriod, BudgetState, Price, PriceKind, UsageRow, cents
from gpufleet.schemas.common import RequestModel, ResponseModel, vars_of


class PriceSet(RequestModel):
    kind: PriceKind = Field(
        default=PriceKind.GPU, description="gpu: per GPU-hour; cpu: per core-hour; ram: per GiB-hour."
    )
    gpu_model: str | None = Field(
        default=None, min_length=1, max_length=100, description="The GPU model (as hosts report it); gpu prices only."
    )
    hourly_price: Decimal = Field(ge=0, max_digits=12, decimal_places=4, description='Per hour, e.g. "1.89".')
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$", description="ISO 4217; one per organization.")
    host_id: UUID | None = Field(default=None, description="Only on this host (e.g. a rented one); else everywhere.")
    effective_from: datetime | None = Field(
        default=None, description="When the price starts to apply (default now; never in the past)."
    )


class PriceRead(ResponseModel):
    id: UUID
    kind: PriceKind
    gpu_model: str | None
    host_id: UUID | None
    hourly_price: Decimal
    currency: str
    effective_from: datetime
    current: bool = Field(description="In force now (false: superseded, or a change still to come).")
    set_by: str | None

    @classmethod
    def of(cls, p: Price) -> PriceRead:
        return cls.model_validate(p)


class UsageGroup(ResponseModel):
    key: str | None = Field(description="The day, user id, job id, GPU model, host id or label value (null: none).")
    name: str | None = Field(description="A readable name for ids: user email, job name, host name.")
    gpu_hours: Decimal = Field(description="GPU-hours held (a 0.25-GPU share counts a quarter), 6 decimals.")
    cost: Decimal = Field(description="Rounded to the cent (half up) from the exact sum of cost rows.")

    @classmethod
    def of(cls, r: UsageRow) -> UsageGroup:
        return cls(key=r.key, name=r.name, gpu_hours=r.gpu_hours.quantize(Decimal("0.000001")), cost=cents(r.cost))


class UsageRead(ResponseModel):
    by: str
    since: datetime
    currency: str
    groups: list[UsageGroup]
    total_gpu_hours: Decimal
    total_cost: Decimal = Field(description="The exact total rounded to the cent (not the sum of rounded groups).")

    @classmethod
    def of(cls, by: str, since: datetime, currency: str, rows: list[UsageRow]) -> UsageRead:
        return cls(
            by=by,
            since=since,
            currency=currency,
            groups=[UsageGroup.of(r) for r in rows],
            total_gpu_hours=sum((r.gpu_hours for r in rows), Decimal(0)).quantize(Decimal("0.000001")),
            total_cost=cents(sum((r.cost for r in rows), Decimal(0))),
        )


class BudgetSet(RequestModel):
    amount: Decimal = Field(ge=0, max_digits=14, decimal_places=2, description="The limit per period, to the cent.")
    period: BudgetPeriod = Field(
        default=BudgetPeriod.MONTH, description="A calendar day, week or month (UTC), or custom (period_days)."
    )
    period_days: int | None = Field(default=None, ge=1, le=366, description="custom: the length of a period, in days.")
    starts_at: datetime | None = Field(
        default=None,
        description="custom: when the first period starts; periods repeat from it (default: today 00:00 UTC).",
    )
    hard: bool = Field(default=False, description="Refuse work that would overspend (else only warn by events).")
    stop_running: bool = Field(
        default=False, description="Hard budgets only: at 100 % the server cancels the scope's running work."
    )
    user_id: UUID | None = Field(default=None, description="Only this user's work.")
    label: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}=.{0,200}$", description="Only jobs with KEY=VALUE."
    )


class BudgetRead(ResponseModel):
    id: UUID
    amount: Decimal
    currency: str
    period: BudgetPeriod
    period_days: int | None = Field(default=None, description="custom periods: their length in days.")
    starts_at: datetime | None = Field(default=None, description="custom periods: when the first one started.")
    hard: bool
    stop_running: bool = Field(default=False, description="At 100 % the server cancels the scope's running work.")
    scope: str = Field(description="organization, user <id> or label KEY=VALUE.")
    user_id: UUID | None
    label: str | None
    period_start: datetime
    spent: Decimal = Field(description="Spent this period (closed + live), to the cent.")
    reserved: Decimal = Field(description="What unfinished jobs may still spend (their estimates less their cost).")
    remaining: Decimal
    percent: Decimal = Field(description="spent / amount x 100, one decimal.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, s: BudgetState) -> BudgetRead:
        b = s.budget
        pct = Decimal(100) if not b.amount_limit else s.spent * 100 / b.amount_limit
        return cls.model_validate(
            {
                **vars_of(b),
                "amount": b.amount_limit,
                "starts_at": b.period_anchor,
                "scope": b.scope,
                "label": f"{b.label_key}={b.label_value}" if b.label_key is not None else None,
                "period_start": s.period_start,
                "spent": cents(s.spent),
                "reserved": cents(s.outstanding),
                "remaining": cents(s.remaining),
                "percent": pct.quantize(Decimal("0.1")),
            }
        )
