"""SDK methods: prices, usage and budgets (docs/costs.md), for the sync and the async client alike."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from pydantic import TypeAdapter

from gpufleet.domain.costs import BudgetPeriod, PriceKind, parse_period
from gpufleet.schemas.costs import BudgetRead, PriceRead, UsageRead
from gpufleet.sdk.base import AsyncBaseClient, BaseClient


def price_body(
    gpu_model: str | None,
    hourly_price: Decimal | str | float,
    kind: PriceKind | str,
    currency: str,
    host_id: UUID | None,
    effective_from: datetime | None,
) -> dict[str, Any]:
    return {
        "kind": str(kind),
        "gpu_model": gpu_model,
        "hourly_price": str(hourly_price),  # exact: never through a float on the wire
        "currency": currency,
        "host_id": str(host_id) if host_id else None,
        "effective_from": effective_from.isoformat() if effective_from else None,
    }


def budget_body(
    amount: Decimal | str | float,
    period: BudgetPeriod | str,
    hard: bool,
    user_id: UUID | None,
    label: str | None,
    starts_at: datetime | None = None,
    stop_running: bool = False,
) -> dict[str, Any]:
    """``period``: day, week, month or a custom length such as ``14d`` (repeating from ``starts_at``)."""
    kind, days = parse_period(str(period))
    return {
        "amount": str(amount),
        "period": str(kind),
        "period_days": days,
        "starts_at": starts_at.isoformat() if starts_at else None,
        "hard": hard,
        "stop_running": stop_running,
        "user_id": str(user_id) if user_id else None,
        "label": label,
    }


class CostsMixin(BaseClient):
    def list_prices(self, *, history: bool = False) -> list[PriceRead]:
        data = self.request("GET", "/v1/prices", params={"history": str(history).lower()})
        return TypeAdapter(list[PriceRead]).validate_python(data)

    def set_price(
        self,
        gpu_model: str | None,
        hourly_price: Decimal | str | float,
        *,
        kind: PriceKind | str = PriceKind.GPU,
        currency: str = "USD",
        host_id: UUID | None = None,
        effective_from: datetime | None = None,
    ) -> PriceRead:
        """A price change per hour from ``effective_from`` (default now); admins only."""
        body = price_body(gpu_model, hourly_price, kind, currency, host_id, effective_from)
        return self._one(PriceRead, "PUT", "/v1/prices", json=body)

    def usage(self, *, by: str = "model", since: str | None = None) -> UsageRead:
        """GPU-hours and cost per ``by`` (day, user, job, model, host, label:KEY) since ``since`` (e.g. 30d)."""
        return self._one(UsageRead, "GET", "/v1/usage", params={"by": by, "since": since})

    def list_budgets(self) -> list[BudgetRead]:
        return TypeAdapter(list[BudgetRead]).validate_python(self.request("GET", "/v1/budgets"))

    def set_budget(
        self,
        amount: Decimal | str | float,
        *,
        period: BudgetPeriod | str = BudgetPeriod.MONTH,
        hard: bool = False,
        user_id: UUID | None = None,
        label: str | None = None,
        starts_at: datetime | None = None,
        stop_running: bool = False,
    ) -> BudgetRead:
        """Create or replace the budget of a scope (organization, ``user_id`` or ``label`` KEY=VALUE).

        ``period``: day, week, month (calendar, UTC) or ``"14d"``: 14-day periods repeating from
        ``starts_at``. ``stop_running`` (with ``hard``): at 100 % the server cancels running work.
        """
        body = budget_body(amount, period, hard, user_id, label, starts_at, stop_running)
        return self._one(BudgetRead, "PUT", "/v1/budgets", json=body)

    def delete_budget(self, budget_id: UUID) -> None:
        self.request("DELETE", f"/v1/budgets/{budget_id}")


class AsyncCostsMixin(AsyncBaseClient):
    async def list_prices(self, *, history: bool = False) -> list[PriceRead]:
        data = await self.request("GET", "/v1/prices", params={"history": str(history).lower()})
        return TypeAdapter(list[PriceRead]).validate_python(data)

    async def set_price(
        self,
        gpu_model: str | None,
        hourly_price: Decimal | str | float,
        *,
        kind: PriceKind | str = PriceKind.GPU,
        currency: str = "USD",
        host_id: UUID | None = None,
        effective_from: datetime | None = None,
    ) -> PriceRead:
        body = price_body(gpu_model, hourly_price, kind, currency, host_id, effective_from)
        return await self._one(PriceRead, "PUT", "/v1/prices", json=body)

    async def usage(self, *, by: str = "model", since: str | None = None) -> UsageRead:
        return await self._one(UsageRead, "GET", "/v1/usage", params={"by": by, "since": since})

    async def list_budgets(self) -> list[BudgetRead]:
        return TypeAdapter(list[BudgetRead]).validate_python(await self.request("GET", "/v1/budgets"))

    async def set_budget(
        self,
        amount: Decimal | str | float,
        *,
        period: BudgetPeriod | str = BudgetPeriod.MONTH,
        hard: bool = False,
        user_id: UUID | None = None,
        label: str | None = None,
        starts_at: datetime | None = None,
        stop_running: bool = False,
    ) -> BudgetRead:
        body = budget_body(amount, period, hard, user_id, label, starts_at, stop_running)
        return await self._one(BudgetRead, "PUT", "/v1/budgets", json=body)

    async def delete_budget(self, budget_id: UUID) -> None:
        await self.request("DELETE", f"/v1/budgets/{budget_id}")
