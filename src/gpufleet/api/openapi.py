"""The API's own documentation: readable operation ids, security schemes, problem+json errors,
and /docs (Swagger UI) and /redoc served from the installed package, never from a CDN.

GPU fleets often run air-gapped; a docs page that loads its JavaScript from the internet is a
blank page there. The assets come from the ``fastapi-offline`` wheel (Swagger UI 5 and ReDoc 2,
MIT). ``swagger-ui-bundle`` was weighed and left: it ships Swagger UI 4.15, which cannot render
the OpenAPI 3.1 documents FastAPI writes, needs Jinja2, and has no ReDoc.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs/assets"

# Names whose area is not their tag's: everything else is ``<tag>_<name without the tag's noun>``.
_OPERATION_IDS = {
    "get_me": "me_get",
    "fleet_summary": "fleet_summary",
    "fleet_view": "fleet_get",
    "fleet_metrics": "fleet_metrics",
    "healthz": "healthz",
    "readyz": "readyz",
    "metrics": "metrics_prometheus",
}

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "gfk_... API key, or a Supabase JWT with X-Gpufleet-Organization",
        "description": "An API key (`Authorization: Bearer gfk_...`); its role decides what it may do.",
    },
    "joinToken": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "gfj_...",
        "description": "A join token: registers one host (`gpufleet agent --join-token`).",
    },
    "hostCredential": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "gfh_...",
        "description": "The credential a host received at registration; every other agent route takes it.",
    },
}

_PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details; some problems add fields (e.g. `field`, `current_attempt`).",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
    "required": ["type", "title", "status"],
    "additionalProperties": True,
}
_VALIDATION_PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "ValidationProblem",
    "allOf": [{"$ref": "#/components/schemas/Problem"}],
    "type": "object",
    "description": "A 422: `detail` names the first field; `errors` lists up to 20 (field, message, type).",
    "properties": {
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                    "type": {"type": ["string", "null"]},
                },
            },
        }
    },
}
_COMMON_ERRORS = {
    "429": "rate limit exceeded; `Retry-After` says when to try again",
    "503": "the database is unreachable or the connection was lost; retry after `Retry-After` seconds",
}
_BODY_ERRORS = {"413": "request body over the server's limit"}
_CONFLICT = (
    "conflicts with the current state (the detail says which, e.g. a slug taken, the last owner); nothing changed"
)

TAGS: list[dict[str, str]] = [
    {"name": "users", "description": "Who the caller is."},
    {"name": "organizations", "description": "Tenants: everything else belongs to one."},
    {"name": "members", "description": "People in an organization and their roles."},
    {"name": "invites", "description": "Invitations into an organization, accepted by token."},
    {"name": "api-keys", "description": "Credentials for the CLI, the SDK and automation."},
    {"name": "jobs", "description": "GPU work: submit, follow, wait, cancel; logs and history."},
    {"name": "quotas", "description": "Limits on concurrent GPUs per organization or member."},
    {"name": "join-tokens", "description": "Tokens that let a host register itself."},
    {"name": "hosts", "description": "Machines running the agent: status, drain, maintenance, revoke."},
    {"name": "gpus", "description": "GPUs, their health and metrics; the fleet summary."},
    {"name": "agent", "description": "What node agents call, with a join token or their host credential."},
    {"name": "events", "description": "Every state change, in order."},
    {"name": "ids", "description": "Short ids: a unique prefix resolved to the whole id."},
    {"name": "costs", "description": "Prices, usage and cost reports, budgets."},
    {"name": "webhooks", "description": "Signed deliveries of events to receivers: endpoints, secrets, history."},
    {"name": "models", "description": "Cog models and their content-addressed versions (Replicate's shapes)."},
    {"name": "files", "description": "Uploaded files: prediction inputs and stored outputs, kept until they expire."},
    {"name": "health", "description": "Liveness, readiness and Prometheus metrics."},
    {"name": "predictions", "description": "Run models: create, wait, stream, cancel, list (Replicate's shapes)."},
    {"name": "deployments", "description": "Named model versions with scaling bounds, served by replicas."},
]


def operation_id(route: APIRoute) -> str:
    """``jobs_submit`` for ``submit_job`` tagged ``jobs``: the area, then what is done."""
    if route.name in _OPERATION_IDS:
        return _OPERATION_IDS[route.name]
    tag = str(route.tags[0]).replace("-", "_") if route.tags else "api"
    words = route.name.split("_")
    for noun in (tag, tag.removesuffix("s")):
        n = noun.split("_")
        for i in range(len(words) - len(n) + 1):
            if words[i : i + len(n)] == n and len(words) > len(n):
                words = words[:i] + words[i + len(n) :]
                break
        else:
            continue
        break
    return "_".join([tag, *words])


def _problem_content(schema: str = "Problem") -> dict[str, Any]:
    return {"application/problem+json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}


def _security(path: str, op: dict[str, Any]) -> list[dict[str, list[str]]] | None:
    if "x-permission" in op:
        return [{"apiKey": []}]
    if path == "/v1/agent/register":
        return [{"joinToken": []}]
    if path == "/v1/invites/accept":
        # The token alone for a new account; an existing account must also prove who it is.
        return [{}, {"apiKey": []}]
    if path.startswith("/v1/agent/"):
        return [{"hostCredential": []}]
    return None


def complete(doc: dict[str, Any]) -> dict[str, Any]:
    """Security schemes, and every error answer documented as the problem+json it is."""
    components = doc.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = _PROBLEM_SCHEMA
    schemas["ValidationProblem"] = _VALIDATION_PROBLEM_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path, ops in doc.get("paths", {}).items():
        for method, op in ops.items():
            security = _security(path, op)
            if security is not None:
                op["security"] = security
            responses: dict[str, Any] = op.setdefault("responses", {})
            if path.startswith("/v1/"):
                extra = dict(_COMMON_ERRORS)
                if method in ("post", "put", "patch"):
                    extra.update(_BODY_ERRORS)
                if method in ("post", "put", "patch", "delete"):
                    extra["409"] = _CONFLICT
                if security is not None:
                    extra["401"] = "missing, invalid, expired or revoked credentials"
                for code, description in extra.items():
                    responses.setdefault(code, {"description": description})
            for code, response in responses.items():
                if code.isdigit() and int(code) >= 400:
                    response["content"] = _problem_content("ValidationProblem" if code == "422" else "Problem")
    return doc


def install(app: FastAPI) -> None:
    """Serve /openapi.json (completed), /docs and /redoc with their assets from the package."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
                tags=TAGS,
            )
            app.openapi_schema = complete(doc)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    assets = resources.files("fastapi_offline") / "static"
    app.mount(ASSETS_URL, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
            oauth2_redirect_url="/docs/oauth2-redirect",
            # Swagger UI's default asks validator.swagger.io for a badge: nothing leaves the cluster.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
