"""`gpufleet db`: migrations by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import typer
from rich.table import Table

from gpufleet.cli.common import console, emit_json, load_settings
from gpufleet.config import Settings
from gpufleet.db import migrate
from gpufleet.db.setup import owner_and_runtime_dsn, prepare, start_embedded

app = typer.Typer(help="Database migrations.", no_args_is_help=True)

T = TypeVar("T")


async def _with_owner(fn: Callable[[Settings, str], Awaitable[T]]) -> T:
    settings = load_settings()
    embedded = start_embedded(settings) if settings.embedded else None
    try:
        owner, _ = owner_and_runtime_dsn(settings, embedded)
        return await fn(settings, owner)
    finally:
        if embedded is not None:
            embedded.stop()


@app.command()
def upgrade(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Apply every pending migration (safe to run while servers start)."""
    applied = asyncio.run(_with_owner(lambda settings, owner: prepare(owner, settings)))
    if as_json:
        emit_json({"applied": [f"{m.version:04d}_{m.name}" for m in applied]})
    elif applied:
        for m in applied:
            console.print(f"applied {m.version:04d}_{m.name}")
    else:
        console.print("database is up to date")


async def _status(_settings: Settings, owner: str) -> list[migrate.MigrationStatus]:
    conn = await asyncpg.connect(owner)
    try:
        return await migrate.status(conn)
    finally:
        await conn.close()


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show which migrations are applied."""
    rows = asyncio.run(_with_owner(_status))
    if as_json:
        emit_json([{"version": r.version, "name": r.name, "applied_at": r.applied_at} for r in rows])
        return
    table = Table(title="Migrations")
    table.add_column("Version", justify="right")
    table.add_column("Name")
    table.add_column("Applied at")
    for r in rows:
        applied = str(r.applied_at) if r.applied_at else "[yellow]pending[/yellow]"
        table.add_row(f"{r.version:04d}", r.name, applied)
    console.print(table)
