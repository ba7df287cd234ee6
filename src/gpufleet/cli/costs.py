"""`gpufleet prices ...`, `gpufleet usage` and `gpufleet budgets ...`: what work costs, and limits (docs/costs.md)."""

from __future__ import annotations

import csv
import sys
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

import typer

from gpufleet.cli.common import console, usage
from gpufleet.cli.remote import JsonOpt, WideOpt, client, resolve, resolve_local, show, show_lines, show_list
from gpufleet.domain.costs import BudgetPeriod, PriceKind, money, parse_period
from gpufleet.schemas.costs import BudgetRead, PriceRead, UsageRead
from gpufleet.sdk import Client

prices = typer.Typer(help="Prices per GPU-hour, CPU core-hour and RAM GiB-hour (admins).", no_args_is_help=True)
budgets = typer.Typer(help="Spending limits per period; hard ones refuse work (admins set them).", no_args_is_help=True)
PRICE_COLUMNS = ["kind", "gpu_model", "host", "per_hour", "from", "state"]
BUDGET_COLUMNS = ["id", "scope", "limit", "hard", "spent", "reserved", "remaining"]


def register(app: typer.Typer) -> None:
    app.add_typer(prices, name="prices")
    app.add_typer(budgets, name="budgets")
    app.command("usage")(usage_cmd)


def _amount(text: str, what: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        usage(f"{what} {text!r} is not a decimal number such as 1.89")
    if not value.is_finite() or value < 0:
        usage(f"{what} must be 0 or more, got {text}")
    return value


def _when(text: str, what: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        usage(f"{what} {text!r} is not an ISO time such as 2026-12-01T00:00:00Z")
    if value.tzinfo is None:
        usage(f"{what} needs a time zone, e.g. 2026-12-01T00:00:00Z")
    return value


def _period_name(b: BudgetRead) -> str:
    return f"{b.period_days}-day period" if b.period is BudgetPeriod.CUSTOM else b.period.value


def _member(c: Client, text: str) -> UUID:
    members = c.list_members()
    by_email = [m.user_id for m in members if m.email.lower() == text.strip().lower()]
    if by_email:
        return by_email[0]
    return resolve_local(text, "member", lambda: ((m.user_id, m.email) for m in members))


@prices.command("set")
def prices_set(
    args: list[str] = typer.Argument(..., help="MODEL PRICE (per GPU-hour), or PRICE alone with --cpu or --ram."),
    cpu: bool = typer.Option(False, "--cpu", help="The price of a CPU core-hour."),
    ram: bool = typer.Option(False, "--ram", help="The price of a GiB of RAM for an hour."),
    currency: str = typer.Option("USD", "--currency", help="ISO 4217; one per organization."),
    host: str = typer.Option(None, "--host", help="Only on this host (id or prefix), e.g. a rented one."),
    effective_from: datetime = typer.Option(None, "--from", help="When it applies (ISO time; default now)."),
    as_json: bool = JsonOpt,
) -> None:
    """Set a price from now (or --from); what already ran keeps the price it ran at."""
    if cpu and ram:
        usage("--cpu and --ram exclude each other")
    kind = PriceKind.CPU if cpu else PriceKind.RAM if ram else PriceKind.GPU
    want = 1 if kind is not PriceKind.GPU else 2
    if len(args) != want:
        usage("give MODEL PRICE, e.g. 'A100-SXM4-80GB' 1.89" if want == 2 else f"--{kind.value} takes PRICE alone")
    model = args[0] if want == 2 else None
    amount = _amount(args[-1], "price")
    if effective_from is not None and effective_from.tzinfo is None:
        usage("--from needs a time zone, e.g. 2026-12-01T00:00:00Z")
    with client() as c:
        host_id = resolve(c, "host", host) if host else None
        p = c.set_price(
            model, amount, kind=kind, currency=currency.upper(), host_id=host_id, effective_from=effective_from
        )
    what = {"gpu": f"{p.gpu_model} GPU-hour", "cpu": "CPU core-hour", "ram": "RAM GiB-hour"}[p.kind.value]
    where = f" on host {p.host_id}" if p.host_id else ""
    show_lines(
        p,
        as_json,
        f"{what}{where}: {p.hourly_price.normalize():f} {p.currency} from {p.effective_from:%Y-%m-%d %H:%M:%S %Z}",
    )


@prices.command("list")
def prices_list(
    history: bool = typer.Option(False, "--history", help="Superseded prices too."),
    wide: bool = WideOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Prices in force now and changes still to come."""
    show_list(lambda c: c.list_prices(history=history), as_json, _price_row, PRICE_COLUMNS, wide=wide)


def _price_row(p: PriceRead) -> dict[str, Any]:
    return {
        "kind": p.kind.value,
        "gpu_model": p.gpu_model or "-",
        "host": str(p.host_id) if p.host_id else "(all)",
        "per_hour": f"{p.hourly_price.normalize():f} {p.currency}",
        "from": f"{p.effective_from:%Y-%m-%d %H:%M %Z}",
        "state": "in force"
        if p.current
        else "superseded"
        if p.effective_from < datetime.now(p.effective_from.tzinfo)
        else "to come",
    }


def usage_cmd(
    by: str = typer.Option("model", "--by", help="day, user, job, model, host or label:KEY."),
    since: str = typer.Option("30d", "--since", help="30d, 12h, 2w or an ISO time."),
    as_csv: bool = typer.Option(False, "--csv", help="CSV on stdout (for spreadsheets)."),
    wide: bool = WideOpt,
    as_json: bool = JsonOpt,
) -> None:
    """GPU-hours and cost per day, user, job, model, host or label, running work included."""
    if as_csv and as_json:
        usage("--csv and --json exclude each other")
    with client() as c:
        report = c.usage(by=by, since=since)
    if as_json:
        show(report, True)
    elif as_csv:
        _csv(report)
    else:
        rows = [
            {
                by: g.key or "(none)",
                "name": g.name or "",
                "gpu_hours": f"{g.gpu_hours:.2f}",
                "cost": money(g.cost, report.currency),
            }
            for g in report.groups
        ]
        rows.append(
            {
                by: "total",
                "name": "",
                "gpu_hours": f"{report.total_gpu_hours:.2f}",
                "cost": money(report.total_cost, report.currency),
            }
        )
        columns = [by, "name", "gpu_hours", "cost"] if any(g.name for g in report.groups) else [by, "gpu_hours", "cost"]
        show(rows, False, columns, title=f"usage since {report.since:%Y-%m-%d %H:%M %Z}", wide=wide)


def _csv(report: UsageRead) -> None:
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow([report.by, "name", "gpu_hours", "cost", "currency"])
    for g in report.groups:
        out.writerow([g.key or "", g.name or "", f"{g.gpu_hours:f}", f"{g.cost:f}", report.currency])


@budgets.command("set")
def budgets_set(
    amount: str = typer.Argument(..., help="The limit per period, e.g. 500."),
    period: str = typer.Option(
        "month", "--period", help="A calendar day, week or month (UTC), or a number of days such as 14d (repeating)."
    ),
    start: str = typer.Option(None, "--start", help="With --period Nd: when the first period starts (ISO time)."),
    user: str = typer.Option(None, "--user", help="Only this member's work (email or id)."),
    label: str = typer.Option(None, "--label", help="Only jobs with this label, KEY=VALUE."),
    hard: bool = typer.Option(False, "--hard", help="Refuse work that would overspend (else only warn)."),
    stop_running: bool = typer.Option(
        False, "--stop-running", help="With --hard: at 100 % the server cancels the scope's running jobs."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Create or replace the budget of the organization, a user or a label, for a period."""
    try:
        kind, _ = parse_period(period)
    except ValueError as e:
        usage(str(e))
    if start is not None and kind is not BudgetPeriod.CUSTOM:
        usage("--start goes with a custom --period such as 14d")
    if stop_running and not hard:
        usage("--stop-running needs --hard")
    starts_at = _when(start, "--start") if start is not None else None
    if user and label:
        usage("--user and --label exclude each other")
    if label is not None and "=" not in label:
        usage(f"--label {label!r} is not KEY=VALUE")
    value = _amount(amount, "amount")
    with client() as c:
        user_id = _member(c, user) if user else None
        b = c.set_budget(
            value,
            period=period,
            hard=hard,
            user_id=user_id,
            label=label,
            starts_at=starts_at,
            stop_running=stop_running,
        )
    strength = "hard, stops running work at 100 %" if b.stop_running else "hard" if b.hard else "soft"
    name = _period_name(b)
    show_lines(
        b,
        as_json,
        f"budget {b.id}: {money(b.amount, b.currency)} per {name} for the {b.scope} ({strength}); "
        f"{money(b.spent, b.currency)} spent this {name} (since {b.period_start:%Y-%m-%d %H:%M} UTC)",
    )


@budgets.command("list")
def budgets_list(wide: bool = WideOpt, as_json: bool = JsonOpt) -> None:
    """Every budget with this period's spend."""
    show_list(Client.list_budgets, as_json, _budget_row, BUDGET_COLUMNS, wide=wide)


def _budget_row(b: BudgetRead) -> dict[str, Any]:
    return {
        "id": str(b.id),
        "scope": b.scope,
        "limit": f"{money(b.amount, b.currency)} / {_period_name(b)}",
        "hard": ("hard+stop" if b.stop_running else "hard") if b.hard else "soft",
        "spent": f"{money(b.spent, b.currency)} ({b.percent}%)",
        "reserved": money(b.reserved, b.currency),
        "remaining": money(b.remaining, b.currency),
    }


@budgets.command("delete")
def budgets_delete(budget: str = typer.Argument(..., help="The budget's id or a unique prefix of it.")) -> None:
    """Remove a budget (admins)."""
    with client() as c:
        full = resolve_local(budget, "budget", lambda: ((b.id, b.scope) for b in c.list_budgets()))
        c.delete_budget(full)
    console.print(f"deleted budget {full}", highlight=False)
