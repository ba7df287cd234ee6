"""Prices, usage, cost and budgets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from uuid import UUID

CENT = Decimal("0.01")


MICRO = Decimal("0.000001")


THRESHOLDS = (50, 80, 100)  # percent of a budget: one budget.threshold event each per period


class PriceKind(StrEnum):
    GPU = "gpu"  # per GPU-hour of one model (a fractional allocation pays its share)
    CPU = "cpu"  # per core-hour
    RAM = "ram"  # per GiB-hour


class BudgetPeriod(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    CUSTOM = "custom"  # period_days days, repeating from period_anchor


def parse_period(text: str) -> tuple[BudgetPeriod, int | None]:
    """``day``, ``week``, ``month`` or ``14d`` (a custom period of 14 days) -> (period, days)."""
    value = text.strip().lower()
    if value.endswith("d") and value[:-1].isdigit():
        return BudgetPeriod.CUSTOM, int(value[:-1])
    try:
        period = BudgetPeriod(value)
    except ValueError:
        raise ValueError(f"period {text!r}: expected day, week, month or a number of days such as 14d") from None
    if period is BudgetPeriod.CUSTOM:
        raise ValueError("a custom period is given as a number of days, such as 14d")
    return period, None


def cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def money(amount: Decimal, currency: str) -> str:
    """``$493.20`` for dollars, ``493.20 EUR`` otherwise."""
    text = f"{cents(amount):,.2f}"
    return f"${text}" if currency == "USD" else f"{text} {currency}"


@dataclass(frozen=True, slots=True)
class Price:
    id: UUID
    organization_id: UUID
    kind: PriceKind
    gpu_model: str | None
    host_id: UUID | None
    hourly_price: Decimal
    currency: str
    effective_from: datetime
    set_by: str | None
    current: bool  # in force now (False: superseded history, or a change still to come)


@dataclass(frozen=True, slots=True)
class UsageRow:
    key: str | None  # the group: a day, user id, job id, model, host id or label value (None: unset)
    name: str | None  # a readable name for ids (user email, job name, host name)
    gpu_hours: Decimal
    cost: Decimal  # exact sum of cost rows (6 decimals); shown to the cent


@dataclass(frozen=True, slots=True)
class Budget:
    id: UUID
    organization_id: UUID
    period: BudgetPeriod
    amount_limit: Decimal
    currency: str
    hard: bool
    user_id: UUID | None
    label_key: str | None
    label_value: str | None
    created_at: datetime
    updated_at: datetime
    period_days: int | None = None  # custom periods only
    period_anchor: datetime | None = None  # custom periods only: when the first one starts
    stop_running: bool = False  # hard budgets only: cancel running work at 100 %

    @property
    def period_name(self) -> str:
        """``month``, or ``14-day period`` for a custom one (as in "this month")."""
        return f"{self.period_days}-day period" if self.period is BudgetPeriod.CUSTOM else self.period.value

    def applies(self, user_id: UUID | None, labels: Mapping[str, str]) -> bool:
        if self.user_id is not None and self.user_id != user_id:
            return False
        return self.label_key is None or labels.get(self.label_key) == self.label_value

    @property
    def scope(self) -> str:
        if self.user_id is not None:
            return f"user {self.user_id}"
        if self.label_key is not None:
            return f"label {self.label_key}={self.label_value}"
        return "organization"


@dataclass(frozen=True, slots=True)
class BudgetState:
    """A budget with what its period has spent (closed + live) and what running work may still spend."""

    budget: Budget
    period_start: datetime
    spent: Decimal
    outstanding: Decimal  # sum over unfinished jobs in scope of (estimate - cost so far), >= 0
    alerted_period_start: datetime | None = None
    alerted_pct: int = 0

    @property
    def remaining(self) -> Decimal:
        return max(Decimal(0), self.budget.amount_limit - self.spent - self.outstanding)

    def blocks(self, estimate: Decimal | None, extra: Decimal = Decimal(0)) -> bool:
        """Whether a job of this ``estimate`` (None: unbounded) would overspend the budget.

        A job without an estimate is let through while anything is left; one with an estimate
        only if all of it fits. ``extra`` is what earlier placements of the same decision took.
        """
        committed = self.spent + self.outstanding + extra
        if not estimate:
            return committed >= self.budget.amount_limit
        return committed + estimate > self.budget.amount_limit

    def reason(self, estimate: Decimal | None, extra: Decimal = Decimal(0)) -> str:
        cur = self.budget.currency
        text = f"budget: {money(self.spent, cur)} of {money(self.budget.amount_limit, cur)} spent"
        if self.outstanding + extra:
            text += f", {money(self.outstanding + extra, cur)} reserved by work already admitted"
        if self.budget.scope != "organization":
            text += f" ({self.budget.scope}, this {self.budget.period_name})"
        else:
            text += f" this {self.budget.period_name}"
        if estimate:
            text += f"; this job may cost {money(estimate, cur)}"
        return text


def first_block(
    states: Sequence[BudgetState],
    user_id: UUID | None,
    labels: Mapping[str, str],
    estimate: Decimal | None,
    extra: Mapping[UUID, Decimal] | None = None,
) -> BudgetState | None:
    """The first hard budget covering this work that has no room for ``estimate``."""
    for s in states:
        if (
            s.budget.hard
            and s.budget.applies(user_id, labels)
            and s.blocks(estimate, (extra or {}).get(s.budget.id, Decimal(0)))
        ):
            return s
    return None


class BudgetBook:
    """Hard budgets during one decision: each placement takes its estimate off what is left."""

    def __init__(self, states: Sequence[BudgetState]) -> None:
        self.states = [s for s in states if s.budget.hard]
        self.extra: dict[UUID, Decimal] = {}

    def admit(self, user_id: UUID | None, labels: Mapping[str, str], estimate: Decimal | None) -> str | None:
        """None if the work fits every hard budget covering it, else the pending reason."""
        if not self.states:
            return None
        blocked = first_block(self.states, user_id, labels, estimate, self.extra)
        return None if blocked is None else blocked.reason(estimate, self.extra.get(blocked.budget.id, Decimal(0)))

    def charge(self, user_id: UUID | None, labels: Mapping[str, str], estimate: Decimal | None) -> None:
        for s in self.states:
            if estimate and s.budget.applies(user_id, labels):
                self.extra[s.budget.id] = self.extra.get(s.budget.id, Decimal(0)) + estimate
