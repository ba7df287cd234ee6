"""Hard budgets in the pure decision: placements take their estimates off what is left, in queue
order; scopes (user, label) only cover their own work. No database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from gpufleet.domain.costs import Budget, BudgetPeriod, BudgetState
from gpufleet.domain.jobs import GpuRequirement
from gpufleet.scheduler.allocator import make_policy
from gpufleet.scheduler.decide import decide_org
from gpufleet.scheduler.types import PendingJob
from tests.scheduler.helpers import host

ORG = uuid.uuid4()
ALICE, BOB = uuid.uuid4(), uuid.uuid4()
NOW = datetime(2026, 11, 30, tzinfo=UTC)


def _budget(
    limit: str, spent: str, *, user: uuid.UUID | None = None, label: tuple[str, str] | None = None
) -> BudgetState:
    b = Budget(
        id=uuid.uuid4(), organization_id=ORG, period=BudgetPeriod.MONTH, amount_limit=Decimal(limit), currency="USD",
        hard=True, user_id=user, label_key=label[0] if label else None, label_value=label[1] if label else None,
        created_at=NOW, updated_at=NOW,
    )  # fmt: skip
    return BudgetState(b, NOW, Decimal(spent), Decimal(0))


def _job(estimate: str | None, user: uuid.UUID = ALICE, labels: dict[str, str] | None = None) -> PendingJob:
    return PendingJob(
        id=uuid.uuid4(), organization_id=ORG, attempt=1, priority=0, waited_s=0.0, gpu=GpuRequirement(),
        cpu_milli=0, ram_mb=0, pending_reason=None, submitted_by=user,
        labels=labels or {}, cost_estimate=Decimal(estimate) if estimate is not None else None,
    )  # fmt: skip


def test_placements_spend_the_budget_in_queue_order() -> None:
    queue = [_job("3"), _job("3"), _job("1"), _job(None)]
    out = decide_org([host("a", gpus=8)], queue, policy=make_policy("default"), budgets=[_budget("10", "3")])
    placed = [j.id for j, _ in out.placements]
    # 3 + 3 + 3 = 9 then 1 more = 10 (fits exactly); nothing is left for the unbounded one
    assert placed == [queue[0].id, queue[1].id, queue[2].id]
    assert (
        out.reasons[queue[3].id] == "budget: $3.00 of $10.00 spent, $7.00 reserved by work already admitted this month"
    )


def test_a_users_budget_holds_only_that_users_work() -> None:
    queue = [_job("5", ALICE), _job("5", BOB), _job("1", ALICE, {"team": "nlp"})]
    budgets = [_budget("5", "1", user=ALICE), _budget("100", "0", label=("team", "nlp"))]
    out = decide_org([host("a", gpus=8)], queue, policy=make_policy("default"), budgets=budgets)
    assert {j.id for j, _ in out.placements} == {queue[1].id, queue[2].id}
    assert out.reasons[queue[0].id].startswith(f"budget: $1.00 of $5.00 spent (user {ALICE}, this month); ")
