"""Files retention: uploads (and stored prediction outputs) are deleted once their ``expires_at``
passes, in batches, so no statement holds many locks or a long transaction. Reads already hide an
expired file; this loop gives its space back."""

from __future__ import annotations

import asyncio
import logging

from gpufleet.background.loop import run_periodically
from gpufleet.config import Settings
from gpufleet.db.pool import Database, in_batches
from gpufleet.repo import files as repo

log = logging.getLogger(__name__)

BATCH = 500


async def run_once(db: Database, *, batch: int = BATCH) -> int:
    """The number of files deleted."""
    total = await in_batches(db, lambda conn, n: repo.delete_expired(conn, limit=n), batch=batch)
    if total:
        log.info("files retention: %d expired files deleted", total)
    return total


async def run(db: Database, settings: Settings, stop: asyncio.Event) -> None:
    async def once() -> None:
        await run_once(db)

    await run_periodically("files-retention", once, interval_s=settings.files_retention_interval_s, stop=stop)
