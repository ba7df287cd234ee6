"""/v1/prices, /v1/usage and /v1/budgets: what work costs, what was spent, and the limits (docs/costs.md)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Response

from gpufleet.api.deps import DB, NOT_FOUND, Tenant, requires
from gpufleet.schemas.costs import BudgetRead, BudgetSet, PriceRead, PriceSet, UsageRead
from gpufleet.services import budgets, costs

router = APIRouter(prefix="/v1", tags=["costs"])


@router.get("/prices", **requires("prices.list"))
async def list_prices(
    ctx: Tenant, db: DB, history: Annotated[bool, Query(description="Include superseded prices.")] = False
) -> list[PriceRead]:
    """Prices in force now and changes still to come (not paginated: a handful per GPU model)."""
    return [PriceRead.of(x) for x in await costs.list_prices(db, ctx, history=history)]


@router.put("/prices", **requires("prices.set", NOT_FOUND))
async def set_price(body: PriceSet, ctx: Tenant, db: DB) -> PriceRead:
    """A price change from `effective_from` (default now). Work already metered keeps its price."""
    price = await costs.set_price(
        db,
        ctx,
        kind=body.kind,
        gpu_model=body.gpu_model,
        hourly_price=body.hourly_price,
        currency=body.currency,
        host_id=body.host_id,
        effective_from=body.effective_from,
    )
    return PriceRead.of(price)


@router.get("/usage", **requires("usage.read"))
async def usage(
    ctx: Tenant,
    db: DB,
    by: Annotated[str, Query(max_length=110, description="day, user, job, model, host or label:KEY.")] = "model",
    since: Annotated[str | None, Query(max_length=64, description="30d, 12h, 2w or an ISO time (default 30d).")] = None,
) -> UsageRead:
    """GPU-hours and cost per group, running work included up to now."""
    rows, start, currency = await costs.usage(db, ctx, by=by, since=since)
    return UsageRead.of(by, start, currency, rows)


@router.get("/budgets", **requires("budgets.list"))
async def list_budgets(ctx: Tenant, db: DB) -> list[BudgetRead]:
    """Every budget with this period's spend (not paginated)."""
    return [BudgetRead.of(s) for s in await budgets.list_budgets(db, ctx)]


@router.put("/budgets", **requires("budgets.set", NOT_FOUND))
async def set_budget(body: BudgetSet, ctx: Tenant, db: DB) -> BudgetRead:
    """Create or replace the budget of a scope (organization, `user_id` or `label`) and period. Idempotent."""
    label = tuple(body.label.split("=", 1)) if body.label else None
    budget = await budgets.set_budget(
        db,
        ctx,
        amount_limit=body.amount,
        period=body.period,
        period_days=body.period_days,
        starts_at=body.starts_at,
        hard=body.hard,
        stop_running=body.stop_running,
        user_id=body.user_id,
        label=(label[0], label[1]) if label else None,
    )
    return next(BudgetRead.of(s) for s in await budgets.list_budgets(db, ctx) if s.budget.id == budget.id)


@router.delete("/budgets/{budget_id}", status_code=204, **requires("budgets.delete", NOT_FOUND))
async def delete_budget(budget_id: UUID, ctx: Tenant, db: DB) -> Response:
    await budgets.delete_budget(db, ctx, budget_id)
    return Response(status_code=204)
