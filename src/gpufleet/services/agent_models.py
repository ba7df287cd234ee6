"""The agent's side of models and files (docs/agent.md, "The Model Runner"): a version's archive
for a host to materialize, the files of predictions it runs (Path outputs up, file inputs down).

Every call is the host's, in its organization, with the credential re-checked in the same
transaction (``ensure_current``). An output file belongs to a prediction that runs on a replica
of this host; anything else (another tenant's, or another host's) is a 404.
"""

from __future__ import annotations

import hashlib
from uuid import UUID

from gpufleet.config import Settings
from gpufleet.db.pool import Database
from gpufleet.domain.hosts import HostIdentity
from gpufleet.domain.models import FileRecord
from gpufleet.errors import NotFound, PayloadTooLarge
from gpufleet.repo import files as files_repo
from gpufleet.repo import models as models_repo
from gpufleet.repo import runner as repo
from gpufleet.services.files import clean_content_type, clean_name
from gpufleet.services.hosts import ensure_current


async def version_archive(db: Database, host: HostIdentity, version_id: UUID) -> tuple[str, bytes]:
    """The version's digest and its tar.gz."""
    async with db.transaction(host.org_id) as conn:
        await ensure_current(conn, host)
        version = await models_repo.get_version(conn, org_id=host.org_id, version_id=version_id)
        data = await models_repo.get_archive(conn, org_id=host.org_id, version_id=version_id)
    if version is None or data is None:
        raise NotFound(f"model version {version_id} not found")
    return version.digest, data


async def store_output(
    db: Database,
    settings: Settings,
    host: HostIdentity,
    prediction_id: UUID,
    *,
    name: str | None,
    content_type: str | None,
    data: bytes,
) -> FileRecord:
    """A Path output of a prediction this host runs, stored as a file of the prediction."""
    if len(data) > settings.files_max_bytes:
        raise PayloadTooLarge(f"a file is at most {settings.files_max_bytes} bytes")
    async with db.transaction(host.org_id) as conn:
        await ensure_current(conn, host)
        if not await repo.prediction_on_host(
            conn, org_id=host.org_id, prediction_id=prediction_id, host_id=host.host_id
        ):
            raise NotFound(f"prediction {prediction_id} does not run on this host")
        return await files_repo.create(
            conn,
            org_id=host.org_id,
            name=clean_name(name),
            content_type=clean_content_type(content_type),
            data=data,
            sha256=hashlib.sha256(data).hexdigest(),
            metadata={},
            expires_in_s=settings.files_retention_s,
            prediction_id=prediction_id,
        )


async def input_file(db: Database, host: HostIdentity, file_id: UUID) -> tuple[FileRecord, bytes]:
    """A file of the host's organization, for a prediction input."""
    async with db.transaction(host.org_id) as conn:
        await ensure_current(conn, host)
        found = await files_repo.get_data(conn, org_id=host.org_id, file_id=file_id)
    if found is None:
        raise NotFound(f"file {file_id} not found (or expired)")
    return found
