"""A model version's facts and its Replicate-shaped OpenAPI schema, from cog.yaml and predict.py.

Static analysis only: the server parses predict.py with ``ast`` and never imports or runs it, so
``Input(...)`` arguments must be literals (as Cog requires too). Every problem is an InvalidInput
that names the file, the parameter and what to change.
"""

from __future__ import annotations

import ast
import posixpath
import re
from collections.abc import Mapping
from importlib import metadata
from typing import Any

import yaml

from gpufleet.domain.models import VersionInfo as VersionInfo  # what derive returns; its home is the domain
from gpufleet.errors import InvalidInput
from gpufleet.inference.cog_types import INPUT_CALLS, Resolver, imports, yields

PREDICT_REF_RE = re.compile(r"^(?P<file>[A-Za-z0-9_./-]+\.py):(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")
INPUT_KEYWORDS = frozenset(
    {"default", "description", "ge", "le", "min_length", "max_length", "regex", "choices", "deprecated", "accept"}
)
RESERVED_SCHEMAS = frozenset(
    {"Input", "Output", "Status", "PredictionRequest", "PredictionResponse", "WebhookEvent", "ValidationError"}
)
MAX_CONCURRENCY = 64


def _server_cog_version() -> str | None:
    try:
        return metadata.version("cog")
    except metadata.PackageNotFoundError:  # pragma: no cover - cog is a dependency
        return None


def _config(files: Mapping[str, bytes]) -> dict[str, Any]:
    raw = files.get("cog.yaml")
    if raw is None:
        raise InvalidInput("cog.yaml: missing at the top of the model directory")
    try:
        cfg = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cog.yaml: not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(cfg, dict):
        raise InvalidInput("cog.yaml: expected a mapping with `predict:` and `build:`")
    return cfg


def _build(cfg: dict[str, Any], files: Mapping[str, bytes]) -> tuple[list[str], str | None, bool]:
    build = cfg.get("build") or {}
    if not isinstance(build, dict):
        raise InvalidInput("cog.yaml: `build` must be a mapping")
    gpu = build.get("gpu", False)
    if not isinstance(gpu, bool):
        raise InvalidInput("cog.yaml: build.gpu must be true or false")
    packages = build.get("python_packages") or []
    if not isinstance(packages, list) or not all(isinstance(p, str) and p.strip() for p in packages):
        raise InvalidInput("cog.yaml: build.python_packages must be a list of requirement strings")
    packages = [p.strip() for p in packages]
    req_file = build.get("python_requirements")
    if req_file is not None:
        if not isinstance(req_file, str) or req_file not in files:
            raise InvalidInput(
                f"cog.yaml: build.python_requirements names {req_file!r}, which is not in the model directory"
            )
        for line in files[req_file].decode("utf-8", "replace").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                packages.append(line)
    version = build.get("python_version")
    if version is not None:
        if isinstance(version, float | int) and not isinstance(version, bool):
            version = str(version)
        if not isinstance(version, str) or not re.fullmatch(r"3\.\d{1,2}(\.\d{1,2})?", version):
            raise InvalidInput(f'cog.yaml: build.python_version {version!r} is not a Python 3 version such as "3.11"')
    return packages, version, gpu


def _literal(node: ast.expr, where: str, what: str) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise InvalidInput(
            f"{where}: {what} must be a literal value ({ast.unparse(node)} is computed); "
            "the schema is read without running predict.py"
        ) from None


def _find_target(tree: ast.Module, name: str, where: str) -> tuple[ast.FunctionDef | ast.AsyncFunctionDef, bool]:
    """(the predict/run function, whether it is a method)."""
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    if name in funcs:
        return funcs[name], False
    if name not in classes:
        raise InvalidInput(f"{where}: no class or function named {name!r} (cog.yaml `predict` names it)")
    seen: set[str] = set()
    todo = [classes[name]]
    while todo:
        cls = todo.pop(0)
        if cls.name in seen:
            continue
        seen.add(cls.name)
        methods = {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        if "predict" in methods and "run" in methods:
            raise InvalidInput(f"{where}: {cls.name} must define either run() or predict(), not both")
        for m in ("predict", "run"):
            if m in methods:
                return methods[m], True
        todo += [classes[b.id] for b in cls.bases if isinstance(b, ast.Name) and b.id in classes]
    raise InvalidInput(f"{where}: {name} has no predict() method")


def _input_call(node: ast.expr | None, resolver: Resolver) -> ast.Call | None:
    if isinstance(node, ast.Call) and resolver.qualname(node.func) in INPUT_CALLS:
        return node
    return None


def _type_ok(value: Any, schema: dict[str, Any]) -> bool:
    t = schema.get("type")
    if t == "array":
        return isinstance(value, list) and all(_type_ok(v, schema["items"]) for v in value)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if t == "string":
        return isinstance(value, str)
    return True


def _parameter(
    arg: ast.arg, default: ast.expr | None, order: int, resolver: Resolver, enums: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    """(the property's schema, whether it is required)."""
    where, name = resolver.where, arg.arg
    what = f"parameter {name!r}"
    if arg.annotation is None:
        raise InvalidInput(f"{where}: {what} of predict() has no type annotation (e.g. {name}: str)")
    schema, optional = resolver.input_schema(arg.annotation, what)
    opts: dict[str, Any] = {}
    call = _input_call(default, resolver)
    if call is not None:
        if len(call.args) > 1:
            raise InvalidInput(f"{where}: {what}: Input() takes only the default positionally")
        if call.args:
            opts["default"] = _literal(call.args[0], where, f"{what}: the default")
        for kw in call.keywords:
            if kw.arg is None or kw.arg not in INPUT_KEYWORDS:
                raise InvalidInput(f"{where}: {what}: Input() has no argument {kw.arg or '**'!r}")
            label = "the default" if kw.arg == "default" else kw.arg
            opts[kw.arg] = _literal(kw.value, where, f"{what}: {label}")
    elif default is not None:
        opts["default"] = _literal(default, where, f"{what}: the default")
    has_default = "default" in opts and opts["default"] is not Ellipsis
    value = opts.get("default") if has_default else None
    required = not has_default
    if has_default and value is None:
        optional = True  # Input(default=None): may be left out
    prop: dict[str, Any] = {"title": name.replace("_", " ").title(), **schema, "x-order": order}
    if optional:
        prop["nullable"] = True
    base = schema["items"] if schema.get("type") == "array" else schema  # a list's constraints bind each item
    numeric = base.get("type") in ("integer", "number")
    textual = base.get("type") == "string" and "format" not in base
    for key, out, ok, kind in (
        ("ge", "minimum", numeric, (int, float)),
        ("le", "maximum", numeric, (int, float)),
        ("min_length", "minLength", textual, (int,)),
        ("max_length", "maxLength", textual, (int,)),
        ("regex", "pattern", textual, (str,)),
    ):
        if opts.get(key) is None:
            continue
        v = opts[key]
        if not ok:
            raise InvalidInput(f"{where}: {what}: {key} does not apply to {ast.unparse(arg.annotation)}")
        if not isinstance(v, kind) or isinstance(v, bool):
            raise InvalidInput(f"{where}: {what}: {key} must be a {' or '.join(k.__name__ for k in kind)}")
        if key == "regex":
            try:
                re.compile(str(v))
            except re.error as exc:
                raise InvalidInput(f"{where}: {what}: regex {v!r} does not compile: {exc}") from None
        prop[out] = v
    if opts.get("description") is not None:
        if not isinstance(opts["description"], str):
            raise InvalidInput(f"{where}: {what}: description must be a string")
        prop["description"] = opts["description"]
    if opts.get("deprecated"):
        prop["deprecated"] = True
    if has_default and value is not None:
        if not _type_ok(value, schema):
            raise InvalidInput(f"{where}: {what}: the default {value!r} is not a {ast.unparse(arg.annotation)}")
        prop["default"] = value
    choices = opts.get("choices")
    if choices is not None:
        if (
            not isinstance(choices, list | tuple)
            or not choices
            or schema.get("type") not in ("string", "integer", "number")
        ):
            raise InvalidInput(f"{where}: {what}: choices must be a non-empty list of str or int values")
        if not all(_type_ok(c, schema) for c in choices):
            raise InvalidInput(f"{where}: {what}: every choice must be a {ast.unparse(arg.annotation)}")
        if has_default and value is not None and value not in choices:
            raise InvalidInput(f"{where}: {what}: the default {value!r} is not one of the choices")
        enum_name = name if name not in RESERVED_SCHEMAS and name not in enums else f"{name}_choices"
        enums[enum_name] = _enumeration(enum_name, list(choices), schema["type"])
        prop = {"allOf": [{"$ref": f"#/components/schemas/{enum_name}"}]} | {
            k: v for k, v in prop.items() if k not in ("type", "title")
        }
    return prop, required


def _inputs(
    fn: ast.FunctionDef | ast.AsyncFunctionDef, is_method: bool, resolver: Resolver
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the Input schema, the enum schemas of parameters with choices)."""
    a = fn.args
    where = resolver.where
    if a.vararg or a.kwarg:
        raise InvalidInput(f"{where}: predict() must not take *args or **kwargs")
    if a.posonlyargs:
        raise InvalidInput(f"{where}: predict() must not take positional-only parameters")
    params = list(a.args)
    if is_method:
        if not params:
            raise InvalidInput(f"{where}: predict() must take self first")
        params = params[1:]
    positional_defaults = [None] * (len(a.args) - len(a.defaults)) + list(a.defaults)
    defaults = positional_defaults[len(a.args) - len(params) :]
    params += a.kwonlyargs
    defaults += list(a.kw_defaults)
    props: dict[str, Any] = {}
    required: list[str] = []
    enums: dict[str, Any] = {}
    for order, (arg, default) in enumerate(zip(params, defaults, strict=True)):
        prop, is_required = _parameter(arg, default, order, resolver, enums)
        props[arg.arg] = prop
        if is_required:
            required.append(arg.arg)
    schema = _object("Input", props)
    if required:
        schema["required"] = required
    return schema, enums


def _enumeration(title: str, values: list[Any], type_: str = "string") -> dict[str, Any]:
    """An enum schema as Cog writes one (its ``description`` included)."""
    return {"title": title, "description": "An enumeration.", "enum": values, "type": type_}


def _object(title: str, properties: dict[str, Any]) -> dict[str, Any]:
    """An object schema as Cog writes one: title, type, properties."""
    return {"title": title, "type": "object", "properties": properties}


def _document(input_schema: dict[str, Any], output: dict[str, Any], enums: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document Cog serves for a predictor (the parts clients read)."""
    ref = "#/components/schemas/"
    status = _enumeration("Status", ["starting", "processing", "succeeded", "canceled", "failed"])
    request = _object(
        "PredictionRequest",
        {
            "id": {"title": "Id", "type": "string"},
            "input": {"$ref": ref + "Input"},
            "webhook": {"title": "Webhook", "type": "string", "format": "uri", "minLength": 1, "maxLength": 65536},
            "created_at": {"title": "Created At", "type": "string", "format": "date-time"},
            "output_file_prefix": {"title": "Output File Prefix", "type": "string"},
            "webhook_events_filter": {
                "type": "array",
                "items": {"$ref": ref + "WebhookEvent"},
                "default": ["start", "output", "logs", "completed"],
            },
        },
    )
    response = _object(
        "PredictionResponse",
        {
            "id": {"title": "Id", "type": "string"},
            "input": {"$ref": ref + "Input"},
            "output": {"$ref": ref + "Output"},
            "logs": {"title": "Logs", "type": "string", "default": ""},
            "error": {"title": "Error", "type": "string"},
            "status": {"$ref": ref + "Status"},
            "version": {"title": "Version", "type": "string"},
            "metrics": {"title": "Metrics", "type": "object"},
            "created_at": {"title": "Created At", "type": "string", "format": "date-time"},
            "started_at": {"title": "Started At", "type": "string", "format": "date-time"},
            "completed_at": {"title": "Completed At", "type": "string", "format": "date-time"},
        },
    )
    webhook_event = _enumeration("WebhookEvent", ["start", "output", "logs", "completed"])
    json_body = {"application/json": {"schema": {"$ref": ref + "PredictionRequest"}}}
    ok = {
        "description": "Successful Response",
        "content": {"application/json": {"schema": {"$ref": ref + "PredictionResponse"}}},
    }
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {
            "/predictions": {
                "post": {
                    "summary": "Predict",
                    "operationId": "predict_predictions_post",
                    "requestBody": {"content": json_body},
                    "responses": {"200": ok},
                }
            }
        },
        "components": {
            "schemas": {
                "Input": input_schema,
                "Output": output,
                "Status": status,
                "WebhookEvent": webhook_event,
                "PredictionRequest": request,
                "PredictionResponse": response,
                **enums,
            }
        },
    }


def derive(files: Mapping[str, bytes]) -> VersionInfo:
    """The version's facts from its files (archive member name -> bytes)."""
    files = {posixpath.normpath(k.removeprefix("./")): v for k, v in files.items()}
    cfg = _config(files)
    ref = cfg.get("predict", cfg.get("run"))
    if not isinstance(ref, str) or not (m := PREDICT_REF_RE.match(ref.strip())):
        raise InvalidInput('cog.yaml: `predict` must name the predictor, e.g. predict: "predict.py:Predictor"')
    ref = ref.strip()
    path = posixpath.normpath(m["file"].removeprefix("./"))
    if path not in files:
        raise InvalidInput(f"{path}: missing (cog.yaml `predict` names it)")
    packages, python_version, gpu = _build(cfg, files)
    conc = cfg.get("concurrency")
    if conc is not None:
        value = conc.get("max") if isinstance(conc, dict) else None
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_CONCURRENCY:
            raise InvalidInput(f"cog.yaml: concurrency.max must be an integer from 1 to {MAX_CONCURRENCY}")
    try:
        tree = ast.parse(files[path].decode("utf-8"), filename=path)
    except SyntaxError as exc:
        raise InvalidInput(f"{path} line {exc.lineno}: syntax error: {exc.msg}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path}: not UTF-8 text") from None
    fn, is_method = _find_target(tree, m["name"], path)
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    resolver = Resolver(imports(tree), classes, path)
    input_schema, enums = _inputs(fn, is_method, resolver)
    if fn.returns is None or (isinstance(fn.returns, ast.Constant) and fn.returns.value in (None, "None")):
        raise InvalidInput(f"{path}: predict() needs a return type annotation, e.g. -> str")
    output, generator = resolver.output_schema(fn.returns)
    if not generator and yields(fn):
        generator = True
        output = {"title": "Output", "type": "array", "items": {k: v for k, v in output.items() if k != "title"}}
        output["x-cog-array-type"] = "iterator"
    cog_version = next(
        (p.split("==", 1)[1].strip() for p in packages if re.match(r"^cog\s*==", p)), _server_cog_version()
    )
    return VersionInfo(
        predict_ref=ref,
        cog_config=cfg,
        openapi_schema=_document(input_schema, output, enums),
        python_packages=packages,
        python_version=python_version,
        gpu=gpu,
        is_generator=generator,
        cog_version=cog_version,
    )
