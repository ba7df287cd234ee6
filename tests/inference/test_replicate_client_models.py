"""The official `replicate` client against a live server: models, versions and files."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import replicate

from gpufleet.inference import archive
from tests.api.conftest import Tenant
from tests.liveserver import LiveServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"


def test_models_versions_and_files_through_the_official_client(live: LiveServer, owner: Tenant) -> None:
    client = replicate.Client(api_token=owner.key, base_url=live.url)
    try:
        _exercise(client, live, owner)
    finally:
        client._client.close()


def _exercise(client: replicate.Client, live: LiveServer, owner: Tenant) -> None:
    slug = owner.org.slug
    created = client.models.create(slug, "stream-text", visibility="private", hardware="cpu")
    assert created.owner == slug and created.name == "stream-text" and created.latest_version is None
    data = archive.pack(EXAMPLES / "stream-text")
    r = httpx.post(
        f"{live.url}/v1/models/{slug}/stream-text/versions",
        content=data,
        headers={"Authorization": f"Bearer {owner.key}", "Content-Type": "application/gzip"},
    )
    assert r.status_code == 201, r.text
    model = client.models.get(f"{slug}/stream-text")
    assert model.latest_version is not None and model.latest_version.id == r.json()["id"]
    output = model.latest_version.openapi_schema["components"]["schemas"]["Output"]
    assert output["x-cog-array-type"] == "iterator" and output["x-cog-array-display"] == "concatenate"
    versions = model.versions.list()
    assert [v.id for v in versions] == [model.latest_version.id]
    assert model.versions.get(model.latest_version.id).cog_version
    page = client.models.list()
    assert [m.name for m in page.results] == ["stream-text"] and page.next is None

    f = client.files.create(io.BytesIO(b"hello"), filename="hello.txt", metadata={"k": "v"})
    assert f.name == "hello.txt" and f.size == 5 and f.metadata == {"k": "v"} and f.content_type == "text/plain"
    assert client.files.get(f.id).checksums["sha256"] == f.checksums["sha256"]
    assert [x.id for x in client.files.list()] == [f.id]
    got = httpx.get(f.urls["get"] + "/download", headers={"Authorization": f"Bearer {owner.key}"})
    assert got.content == b"hello"
    assert client.files.delete(f.id) is True
    assert client.files.list() == []
