"""SDK methods: models, versions pushed from a Cog directory, and files (sync and async).

A model is named ``"owner/name"`` (the organization's slug, then the model's name). Pushing packs
the directory here (``inference.archive.pack``) and reads its schema first, so a missing cog.yaml
or a bad predict.py fails before anything is uploaded.
"""

from __future__ import annotations

import json
import mimetypes
from pathlib import Path
from typing import Any, BinaryIO
from uuid import UUID

from gpufleet.domain.models import split_ref
from gpufleet.inference import archive, cog_schema
from gpufleet.schemas.models import FileRead, ModelRead, VersionRead
from gpufleet.sdk.base import AsyncBaseClient, BaseClient, decode, present

PUSH_TIMEOUT_S = 600.0
GZIP = {"Content-Type": "application/gzip"}


def model_path(ref: str) -> str:
    owner, name = split_ref(ref)
    return f"/v1/models/{owner}/{name}"


def model_body(
    name: str,
    *,
    owner: str | None = None,
    description: str = "",
    gpus: int | None = None,
    gpu_fraction: float | None = None,
    min_memory_gb: float | None = None,
    gpu_model: list[str] | str | None = None,
    cpu: float | None = None,
    ram_gb: float | None = None,
) -> dict[str, Any]:
    models = [gpu_model] if isinstance(gpu_model, str) else gpu_model
    body: dict[str, Any] = {
        "owner": owner,
        "name": name,
        "description": description,
        "gpus": gpus,
        "gpu_fraction": gpu_fraction,
        "min_memory_gb": min_memory_gb,
        "gpu_model": models or None,
        "cpu": cpu,
        "ram_gb": ram_gb,
    }
    return present(body)


def pack_model(directory: str | Path) -> tuple[bytes, cog_schema.VersionInfo]:
    """The directory's tar.gz and what the server will read from it; InvalidInput naming the problem."""
    data = archive.pack(Path(directory))
    info = cog_schema.derive(archive.read_files(data, suffixes=(".py", ".yaml", ".yml", ".txt")))
    return data, info


def _file_parts(
    content: bytes | str | Path | BinaryIO,
    filename: str | None,
    content_type: str | None,
    metadata: dict[str, Any] | None,
) -> dict[str, Any]:
    if isinstance(content, str | Path):
        path = Path(content)
        filename = filename or path.name
        data: bytes | BinaryIO = path.read_bytes()
    else:
        data = content
        filename = filename or Path(getattr(content, "name", "file")).name
    kind = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    form = {"metadata": json.dumps(metadata)} if metadata else {}
    return {"files": {"content": (filename, data, kind)}, "data": form}


class ModelsMixin(BaseClient):
    def create_model(self, name: str, **fields: Any) -> ModelRead:
        """``owner``, ``description``, and the default hardware: ``gpus`` or ``gpu_fraction``,
        ``min_memory_gb``, ``gpu_model``, ``cpu``, ``ram_gb``."""
        return self._one(ModelRead, "POST", "/v1/models", json=model_body(name, **fields))

    def get_model(self, ref: str) -> ModelRead:
        """``ref``: ``"owner/name"``."""
        return self._one(ModelRead, "GET", model_path(ref))

    def list_models(self) -> list[ModelRead]:
        return list(self._pages(ModelRead, "/v1/models"))

    def update_model(self, ref: str, **changes: Any) -> ModelRead:
        """``description``, or hardware fields (any given replaces the default hardware whole)."""
        return self._one(ModelRead, "PATCH", model_path(ref), json=present(changes))

    def delete_model(self, ref: str) -> None:
        self.request("DELETE", model_path(ref))

    def push_model(self, directory: str | Path, ref: str) -> tuple[VersionRead, bool]:
        """(the version, whether it is new); pushing content seen before returns that version."""
        data, _ = pack_model(directory)
        return self.push_model_archive(ref, data)

    def push_model_archive(self, ref: str, data: bytes) -> tuple[VersionRead, bool]:
        r = self._http.post(f"{model_path(ref)}/versions", content=data, headers=GZIP, timeout=PUSH_TIMEOUT_S)
        return VersionRead.model_validate(decode(r)), r.status_code == 201

    def list_model_versions(self, ref: str) -> list[VersionRead]:
        return list(self._pages(VersionRead, f"{model_path(ref)}/versions"))

    def get_model_version(self, ref: str, version_id: str) -> VersionRead:
        return self._one(VersionRead, "GET", f"{model_path(ref)}/versions/{version_id}")

    def delete_model_version(self, ref: str, version_id: str) -> None:
        self.request("DELETE", f"{model_path(ref)}/versions/{version_id}")

    # -- files ----------------------------------------------------------------------------

    def upload_file(
        self,
        content: bytes | str | Path | BinaryIO,
        *,
        filename: str | None = None,
        content_type: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> FileRead:
        """Upload a file (a path, bytes or an open binary file); pass ``.urls["get"]`` as an input."""
        parts = _file_parts(content, filename, content_type, metadata)
        return FileRead.model_validate(decode(self._http.post("/v1/files", timeout=PUSH_TIMEOUT_S, **parts)))

    def list_files(self) -> list[FileRead]:
        return list(self._pages(FileRead, "/v1/files"))

    def get_file(self, file_id: UUID) -> FileRead:
        return self._one(FileRead, "GET", f"/v1/files/{file_id}")

    def download_file(self, file_id: UUID) -> bytes:
        r = self._http.get(f"/v1/files/{file_id}/download", timeout=PUSH_TIMEOUT_S)
        if r.status_code >= 400:
            decode(r)  # raises the typed error
        return r.content

    def delete_file(self, file_id: UUID) -> None:
        self.request("DELETE", f"/v1/files/{file_id}")


class AsyncModelsMixin(AsyncBaseClient):
    async def create_model(self, name: str, **fields: Any) -> ModelRead:
        return await self._one(ModelRead, "POST", "/v1/models", json=model_body(name, **fields))

    async def get_model(self, ref: str) -> ModelRead:
        return await self._one(ModelRead, "GET", model_path(ref))

    async def list_models(self) -> list[ModelRead]:
        return [m async for m in self._pages(ModelRead, "/v1/models")]

    async def update_model(self, ref: str, **changes: Any) -> ModelRead:
        return await self._one(ModelRead, "PATCH", model_path(ref), json=present(changes))

    async def delete_model(self, ref: str) -> None:
        await self.request("DELETE", model_path(ref))

    async def push_model(self, directory: str | Path, ref: str) -> tuple[VersionRead, bool]:
        data, _ = pack_model(directory)
        return await self.push_model_archive(ref, data)

    async def push_model_archive(self, ref: str, data: bytes) -> tuple[VersionRead, bool]:
        r = await self._http.post(f"{model_path(ref)}/versions", content=data, headers=GZIP, timeout=PUSH_TIMEOUT_S)
        return VersionRead.model_validate(decode(r)), r.status_code == 201

    async def list_model_versions(self, ref: str) -> list[VersionRead]:
        return [v async for v in self._pages(VersionRead, f"{model_path(ref)}/versions")]

    async def get_model_version(self, ref: str, version_id: str) -> VersionRead:
        return await self._one(VersionRead, "GET", f"{model_path(ref)}/versions/{version_id}")

    async def delete_model_version(self, ref: str, version_id: str) -> None:
        await self.request("DELETE", f"{model_path(ref)}/versions/{version_id}")

    async def upload_file(
        self,
        content: bytes | str | Path | BinaryIO,
        *,
        filename: str | None = None,
        content_type: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> FileRead:
        parts = _file_parts(content, filename, content_type, metadata)
        r = await self._http.post("/v1/files", timeout=PUSH_TIMEOUT_S, **parts)
        return FileRead.model_validate(decode(r))

    async def list_files(self) -> list[FileRead]:
        return [f async for f in self._pages(FileRead, "/v1/files")]

    async def get_file(self, file_id: UUID) -> FileRead:
        return await self._one(FileRead, "GET", f"/v1/files/{file_id}")

    async def download_file(self, file_id: UUID) -> bytes:
        r = await self._http.get(f"/v1/files/{file_id}/download", timeout=PUSH_TIMEOUT_S)
        if r.status_code >= 400:
            decode(r)  # raises the typed error
        return r.content

    async def delete_file(self, file_id: UUID) -> None:
        await self.request("DELETE", f"/v1/files/{file_id}")
