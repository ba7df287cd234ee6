"""/v1/models and /v1/files: Replicate's shapes, content-addressed pushes, tenancy, roles, caps."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import httpx

from gpufleet.db.pool import Database
from gpufleet.domain.tenancy import Role
from gpufleet.inference import archive
from tests.api.conftest import Tenant, TenantFactory, build_app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"
GZIP = {"Content-Type": "application/gzip"}


def _tar(files: dict[str, str]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


async def _create(client: httpx.AsyncClient, t: Tenant, name: str = "echo", **body: object) -> httpx.Response:
    return await client.post("/v1/models", json={"owner": t.org.slug, "name": name, **body}, headers=t.headers)


async def test_create_push_get_in_replicates_shape(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    admin: Tenant = await tenant(Role.ADMIN)
    r = await _create(client, admin, description="says it back", gpu_fraction=0.25, min_memory_gb=8)
    assert r.status_code == 201, r.text
    model = r.json()
    assert model["latest_version"] is None and model["visibility"] == "private" and model["run_count"] == 0
    assert model["hardware"] == {
        "gpus": 1,
        "gpu_fraction": 0.25,
        "min_memory_gb": 8.0,
        "gpu_models": [],
        "cpu": 0.0,
        "ram_gb": 0.0,
        "label": "0.25 GPU >=8 GiB",
    }
    assert (await _create(client, admin)).status_code == 409
    data = archive.pack(EXAMPLES / "echo")
    path = f"/v1/models/{admin.org.slug}/echo"
    r = await client.post(f"{path}/versions", content=data, headers=admin.headers | GZIP)
    assert r.status_code == 201, r.text
    version = r.json()
    assert version["id"] == archive.version_digest(admin.org.slug, "echo", data)
    assert version["cog_version"] and version["is_generator"] is False and version["archive_size"] == len(data)
    # the same content again: the same version, 200
    again = await client.post(f"{path}/versions", content=data, headers=admin.headers | GZIP)
    assert again.status_code == 200 and again.json()["id"] == version["id"]
    got = (await client.get(path, headers=admin.headers)).json()
    for key in ("url", "owner", "name", "description", "visibility", "github_url", "paper_url", "license_url"):
        assert key in got
    assert got["owner"] == admin.org.slug and got["name"] == "echo" and got["default_example"] is None
    latest = got["latest_version"]
    assert latest["id"] == version["id"]
    schema = latest["openapi_schema"]["components"]["schemas"]
    assert schema["Input"]["required"] == ["text"] and schema["Output"] == {"title": "Output", "type": "string"}
    versions = (await client.get(f"{path}/versions", headers=admin.headers)).json()
    assert [v["id"] for v in versions["results"]] == [version["id"]] and versions["next"] is None
    one = await client.get(f"{path}/versions/{version['id']}", headers=admin.headers)
    assert one.status_code == 200 and one.json()["openapi_schema"] == latest["openapi_schema"]
    assert (await client.get(f"{path}/versions/{'0' * 64}", headers=admin.headers)).status_code == 404
    assert (await client.get(f"{path}/versions/not-a-digest", headers=admin.headers)).status_code == 404
    listed = (await client.get("/v1/models", headers=admin.headers)).json()
    assert [m["name"] for m in listed["results"]] == ["echo"] and listed["results"][0]["latest_version"]["id"]
    types = [
        e["type"]
        for e in (await client.get("/v1/events", params={"type": "model"}, headers=admin.headers)).json()["events"]
    ]
    assert types.count("model.version_created") == 1 and "model.created" in types


async def test_a_new_push_becomes_latest_and_deleting_it_falls_back(
    client: httpx.AsyncClient, tenant: TenantFactory
) -> None:
    admin: Tenant = await tenant(Role.OWNER)
    await _create(client, admin, name="m")
    path = f"/v1/models/{admin.org.slug}/m"
    code = "from cog import BasePredictor\nclass Predictor(BasePredictor):\n    def predict(self, x: int) -> int:\n        return x\n"
    one = _tar({"cog.yaml": 'predict: "predict.py:Predictor"\n', "predict.py": code})
    two = _tar({"cog.yaml": 'predict: "predict.py:Predictor"\n', "predict.py": code + "# v2\n"})
    v1 = (await client.post(f"{path}/versions", content=one, headers=admin.headers | GZIP)).json()["id"]
    v2 = (await client.post(f"{path}/versions", content=two, headers=admin.headers | GZIP)).json()["id"]
    assert (await client.get(path, headers=admin.headers)).json()["latest_version"]["id"] == v2
    # pushing the first directory again rolls back to it
    assert (await client.post(f"{path}/versions", content=one, headers=admin.headers | GZIP)).status_code == 200
    assert (await client.get(path, headers=admin.headers)).json()["latest_version"]["id"] == v1
    assert (await client.delete(f"{path}/versions/{v1}", headers=admin.headers)).status_code == 204
    assert (await client.get(path, headers=admin.headers)).json()["latest_version"]["id"] == v2
    r = await client.patch(path, json={"description": "new", "gpus": 0}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["description"] == "new" and r.json()["hardware"]["label"] == "CPU"
    assert (await client.delete(path, headers=admin.headers)).status_code == 204
    assert (await client.get(path, headers=admin.headers)).status_code == 404


async def test_bad_pushes_name_the_problem(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    admin: Tenant = await tenant(Role.ADMIN)
    await _create(client, admin)
    path = f"/v1/models/{admin.org.slug}/echo/versions"
    cases = [
        (b"", "tar.gz"),
        (b"garbage", "not a tar.gz"),
        (_tar({"predict.py": "x = 1\n"}), "cog.yaml: missing"),
        (_tar({"cog.yaml": 'predict: "predict.py:Predictor"\n', "predict.py": "def (:\n"}), "predict.py line 1"),
        (
            _tar(
                {
                    "cog.yaml": 'predict: "predict.py:P"\n',
                    "predict.py": "from cog import Input\nclass P:\n    def predict(self, n: int = Input(ge=K)) -> int: ...\n",
                }
            ),
            "parameter 'n': ge must be a literal",
        ),
    ]
    for body, message in cases:
        r = await client.post(path, content=body, headers=admin.headers | GZIP)
        assert r.status_code == 422, r.text
        assert message in r.json()["detail"]
    assert (await client.get(f"{path}", headers=admin.headers)).json()["results"] == []


async def test_tenancy_and_roles(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    admin: Tenant = await tenant(Role.ADMIN)
    member: Tenant = await tenant(Role.MEMBER, admin.org)
    viewer: Tenant = await tenant(Role.VIEWER, admin.org)
    other: Tenant = await tenant(Role.OWNER)
    assert (await _create(client, member)).status_code == 403
    assert (await _create(client, admin)).status_code == 201
    data = archive.pack(EXAMPLES / "echo")
    path = f"/v1/models/{admin.org.slug}/echo"
    assert (await client.post(f"{path}/versions", content=data, headers=member.headers | GZIP)).status_code == 403
    assert (await client.get(path, headers=viewer.headers)).status_code == 200
    # another organization: 404 under the real owner's slug and under its own
    assert (await client.get(path, headers=other.headers)).status_code == 404
    assert (await client.post(f"{path}/versions", content=data, headers=other.headers | GZIP)).status_code == 404
    assert (await client.delete(path, headers=other.headers)).status_code == 404
    assert (await client.get(f"/v1/models/{other.org.slug}/echo", headers=other.headers)).status_code == 404
    r = await client.post("/v1/models", json={"owner": admin.org.slug, "name": "x"}, headers=other.headers)
    assert r.status_code == 404
    assert (await client.get("/v1/models", headers=other.headers)).json()["results"] == []
    bad = await client.post("/v1/models", json={"name": "Bad Name"}, headers=admin.headers)
    assert bad.status_code == 422 and "name" in bad.json()["detail"]
    both = await client.post("/v1/models", json={"name": "x", "gpus": 2, "gpu_fraction": 0.5}, headers=admin.headers)
    assert both.status_code == 422
    public = await client.post("/v1/models", json={"name": "x", "visibility": "public"}, headers=admin.headers)
    assert public.status_code == 422


async def test_pages_follow_next_urls(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    admin: Tenant = await tenant(Role.ADMIN)
    for i in range(5):
        assert (await _create(client, admin, name=f"m{i}")).status_code == 201
    seen: list[str] = []
    url: str | None = "/v1/models?limit=2"
    while url:
        page = (await client.get(url, headers=admin.headers)).json()
        seen += [m["name"] for m in page["results"]]
        url = page["next"]
    assert seen == ["m4", "m3", "m2", "m1", "m0"]


async def test_push_is_capped_by_size(db: Database, tenant: TenantFactory, client: httpx.AsyncClient) -> None:
    admin: Tenant = await tenant(Role.ADMIN)
    await _create(client, admin)
    big = b"\0" * (archive.MAX_ARCHIVE_BYTES + 1)
    r = await client.post(f"/v1/models/{admin.org.slug}/echo/versions", content=big, headers=admin.headers | GZIP)
    assert r.status_code == 413


async def test_files_upload_read_download_delete(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    member: Tenant = await tenant(Role.MEMBER)
    other: Tenant = await tenant(Role.OWNER)
    r = await client.post(
        "/v1/files",
        files={"content": ("../../cat é.png", b"\x89PNG data", "image/png")},
        data={"metadata": json.dumps({"purpose": "test"})},
        headers=member.headers,
    )
    assert r.status_code == 201, r.text
    f = r.json()
    assert f["name"] == "cat é.png" and f["content_type"] == "image/png" and f["size"] == 9
    assert f["metadata"] == {"purpose": "test"} and len(f["checksums"]["sha256"]) == 64
    assert f["urls"]["get"].endswith(f"/v1/files/{f['id']}") and f["expires_at"] > f["created_at"]
    got = await client.get(f"/v1/files/{f['id']}", headers=member.headers)
    assert got.json() == f
    dl = await client.get(f"/v1/files/{f['id']}/download", headers=member.headers)
    assert dl.content == b"\x89PNG data" and dl.headers["content-type"] == "image/png"
    assert "filename*=UTF-8''cat%20%C3%A9.png" in dl.headers["content-disposition"]
    assert [x["id"] for x in (await client.get("/v1/files", headers=member.headers)).json()["results"]] == [f["id"]]
    assert (await client.get(f"/v1/files/{f['id']}", headers=other.headers)).status_code == 404
    assert (await client.get(f"/v1/files/{f['id']}/download", headers=other.headers)).status_code == 404
    assert (await client.delete(f"/v1/files/{f['id']}", headers=other.headers)).status_code == 404
    assert (await client.delete(f"/v1/files/{f['id']}", headers=member.headers)).status_code == 204
    assert (await client.get(f"/v1/files/{f['id']}", headers=member.headers)).status_code == 404


async def test_files_bad_uploads(client: httpx.AsyncClient, tenant: TenantFactory) -> None:
    member: Tenant = await tenant(Role.MEMBER)
    r = await client.post("/v1/files", data={"x": "1"}, headers=member.headers)
    assert r.status_code == 422 and "content" in r.json()["detail"]
    r = await client.post("/v1/files", files={"content": ("a", b"x")}, data={"metadata": "[1]"}, headers=member.headers)
    assert r.status_code == 422 and "metadata" in r.json()["detail"]
    many = {f"f{i}": str(i) for i in range(9)}  # over the part limit: a 422 saying so, not Starlette's bare 400
    r = await client.post("/v1/files", files={"content": ("a", b"x")}, data=many, headers=member.headers)
    assert r.status_code == 422 and r.json()["detail"].startswith("body: Too many fields"), r.text


async def test_files_are_capped_by_size(db: Database, tenant: TenantFactory) -> None:
    member: Tenant = await tenant(Role.MEMBER)
    app = build_app(db, files_max_bytes=1000)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            ok = await c.post("/v1/files", files={"content": ("a", b"x" * 1000)}, headers=member.headers)
            assert ok.status_code == 201
            over = await c.post("/v1/files", files={"content": ("a", b"x" * 1001)}, headers=member.headers)
            assert over.status_code == 413 and "1000 bytes" in over.json()["detail"]
            huge = await c.post("/v1/files", files={"content": ("a", b"x" * 200_000)}, headers=member.headers)
            assert huge.status_code == 413
