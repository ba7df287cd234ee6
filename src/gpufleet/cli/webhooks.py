"""`gpufleet webhooks ...`: endpoints, secrets, test pings and delivery history, through the SDK."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import typer

from gpufleet.cli.common import console
from gpufleet.cli.remote import JsonOpt, WideOpt, client, resolve_local, show, show_list
from gpufleet.limits import MAX_PAGE
from gpufleet.schemas.webhooks import DeliveryRead, WebhookRead
from gpufleet.sdk import Client

webhooks = typer.Typer(
    help="Signed HTTP notifications of events (Standard Webhooks; admins only).", no_args_is_help=True
)
COLUMNS = ["id", "url", "events", "enabled", "note"]
DELIVERY_COLUMNS = ["id", "event", "status", "attempts", "last", "created_at"]


def register(app: typer.Typer) -> None:
    app.add_typer(webhooks, name="webhooks")


IdArg = typer.Argument(..., help="The webhook's id, or a unique start of it (4+ hex digits).")


def _webhook(c: Client, text: str) -> UUID:
    """A webhook id from a unique prefix (an organization has a handful: matched locally)."""
    return resolve_local(text, "webhook", lambda: ((w.id, w.url) for w in c.list_webhooks()))


def _row(w: WebhookRead) -> dict[str, Any]:
    note = w.disabled_reason or (f"failing since {w.failing_since:%Y-%m-%d %H:%M}" if w.failing_since else "")
    return {
        "id": str(w.id),
        "url": w.url,
        "events": ", ".join(w.event_types) or "*",
        "enabled": "yes" if w.enabled else "no",
        "note": note,
    }


def _delivery(d: DeliveryRead) -> dict[str, Any]:
    last = d.last_error or (str(d.last_status_code) if d.last_status_code else "")
    return {
        "id": str(d.id),
        "event": d.event_type,
        "status": d.status,
        "attempts": d.attempts_made,
        "last": last,
        "created_at": f"{d.created_at:%Y-%m-%d %H:%M:%S}",
    }


def _secret(secret: str) -> None:
    console.print(f"signing secret (shown once; verify deliveries with it):\n\n  {secret}\n", highlight=False)


@webhooks.command("create")
def create(
    url: str = typer.Argument(..., help="The receiver's http(s) URL."),
    event: list[str] = typer.Option(None, "--event", "-e", help="A type or prefix (job.*); repeat. Default: all."),
    description: str = typer.Option("", "--description", help="A note for people."),
    disabled: bool = typer.Option(False, "--disabled", help="Create it switched off."),
    as_json: bool = JsonOpt,
) -> None:
    """Create a webhook and print its signing secret (once)."""
    with client() as c:
        w = c.create_webhook(url, event or [], description=description, enabled=not disabled)
    if as_json:
        show(w, True)
        return
    console.print(f"webhook {w.id} -> {w.url} ({', '.join(w.event_types) or 'every event'})", highlight=False)
    _secret(w.secret)


@webhooks.command("list")
def list_(as_json: bool = JsonOpt, wide: bool = WideOpt) -> None:
    """The organization's webhooks, their filters, and why one is disabled or failing."""
    show_list(Client.list_webhooks, as_json, _row, COLUMNS, wide=wide)


@webhooks.command("show")
def show_one(webhook_id: str = IdArg, as_json: bool = JsonOpt, wide: bool = WideOpt) -> None:
    """One webhook."""
    with client() as c:
        w = c.get_webhook(_webhook(c, webhook_id))
    show(w if as_json else _row(w), as_json, None if as_json else COLUMNS, wide=wide)


@webhooks.command("update")
def update(
    webhook_id: str = IdArg,
    url: str = typer.Option(None, "--url"),
    event: list[str] = typer.Option(None, "--event", "-e", help="Replace the filters; repeat."),
    description: str = typer.Option(None, "--description"),
    enable: bool = typer.Option(None, "--enable/--disable", help="Switch on (re-enables a disabled one) or off."),
    as_json: bool = JsonOpt,
) -> None:
    """Change a webhook's URL, filters, description, or switch it on or off."""
    with client() as c:
        w = c.update_webhook(
            _webhook(c, webhook_id), url=url, event_types=event or None, description=description, enabled=enable
        )
    show(w if as_json else _row(w), as_json, None if as_json else COLUMNS)


@webhooks.command("delete")
def delete(webhook_id: str = IdArg) -> None:
    """Delete a webhook and its delivery history."""
    with client() as c:
        full = _webhook(c, webhook_id)
        c.delete_webhook(full)
    console.print(f"deleted webhook {full}", highlight=False)


@webhooks.command("rotate-secret")
def rotate(
    webhook_id: str = IdArg,
    overlap: float = typer.Option(None, "--overlap-s", help="The old secret keeps signing this long (default 24 h)."),
    as_json: bool = JsonOpt,
) -> None:
    """A new signing secret; both sign deliveries during the overlap, so receivers switch without a gap."""
    with client() as c:
        w = c.rotate_webhook_secret(_webhook(c, webhook_id), overlap_s=overlap)
    if as_json:
        show(w, True)
        return
    until = w.previous_secret_expires_at
    console.print(
        f"the old secret signs too until {until:%Y-%m-%d %H:%M:%S %Z}" if until else "the old secret no longer signs"
    )
    _secret(w.secret)


@webhooks.command("test")
def ping(webhook_id: str = IdArg, as_json: bool = JsonOpt) -> None:
    """Send a webhook.test ping; see it with `gpufleet webhooks deliveries`."""
    with client() as c:
        d = c.test_webhook(_webhook(c, webhook_id))
    show(d if as_json else _delivery(d), as_json, None if as_json else DELIVERY_COLUMNS)


@webhooks.command("deliveries")
def deliveries(
    webhook_id: str = IdArg,
    status: str = typer.Option(None, "--status", help="pending, delivering, failed, succeeded or dead."),
    limit: int = typer.Option(20, "--limit", min=1, max=MAX_PAGE),
    as_json: bool = JsonOpt,
) -> None:
    """The newest deliveries, each with its attempts (--json)."""
    with client() as c:
        page = c.webhook_deliveries(_webhook(c, webhook_id), status=status, limit=limit)
    show(page.items if as_json else [_delivery(d) for d in page.items], as_json, None if as_json else DELIVERY_COLUMNS)


@webhooks.command("redeliver")
def redeliver(
    webhook_id: str = IdArg,
    delivery_id: UUID = typer.Argument(..., help="The delivery's id (whole)."),
    as_json: bool = JsonOpt,
) -> None:
    """Send a delivery again now (same webhook-id, fresh retry schedule)."""
    with client() as c:
        d = c.redeliver(_webhook(c, webhook_id), delivery_id)
    show(d if as_json else _delivery(d), as_json, None if as_json else DELIVERY_COLUMNS)
