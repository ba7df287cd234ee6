"""Python annotations of a Cog predictor, read from its syntax tree, as JSON schemas.

The server never imports model code: names are resolved through the module's imports
(``from cog import Path``, ``import cog``, ``from typing import Iterator``, ...), so that
``cog.Path``, ``Path`` imported from cog and ``"Path"`` in quotes all mean the same thing.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

from gpufleet.errors import InvalidInput

PRIMITIVES: dict[str, dict[str, Any]] = {
    "builtins.str": {"type": "string"},
    "builtins.int": {"type": "integer"},
    "builtins.float": {"type": "number"},
    "builtins.bool": {"type": "boolean"},
    "cog.Path": {"type": "string", "format": "uri"},
    "cog.File": {"type": "string", "format": "uri"},
    "cog.URLPath": {"type": "string", "format": "uri"},
    "cog.URLFile": {"type": "string", "format": "uri"},
    "cog.types.Path": {"type": "string", "format": "uri"},
    "cog.types.File": {"type": "string", "format": "uri"},
    "cog.Secret": {"type": "string", "format": "password", "writeOnly": True, "x-cog-secret": True},
    "cog.types.Secret": {"type": "string", "format": "password", "writeOnly": True, "x-cog-secret": True},
}
ANY_TYPES = frozenset({"typing.Any", "builtins.dict", "typing.Dict", "builtins.object"})
LIST_TYPES = frozenset({"builtins.list", "typing.List", "collections.abc.Sequence", "typing.Sequence"})
OPTIONAL_TYPES = frozenset({"typing.Optional"})
UNION_TYPES = frozenset({"typing.Union"})
ITERATOR_TYPES = frozenset(
    {
        "typing.Iterator",
        "typing.Iterable",
        "typing.Generator",
        "typing.AsyncIterator",
        "typing.AsyncIterable",
        "typing.AsyncGenerator",
        "collections.abc.Iterator",
        "collections.abc.Iterable",
        "collections.abc.Generator",
        "collections.abc.AsyncIterator",
        "collections.abc.AsyncIterable",
        "collections.abc.AsyncGenerator",
    }
)
CONCATENATE_TYPES = frozenset(
    {"cog.ConcatenateIterator", "cog.AsyncConcatenateIterator", "cog.types.ConcatenateIterator"}
)
BASEMODEL_TYPES = frozenset({"cog.BaseModel", "pydantic.BaseModel", "cog.model.BaseModel"})
INPUT_CALLS = frozenset({"cog.Input", "cog.input.Input"})
BUILTINS = frozenset({"str", "int", "float", "bool", "list", "dict", "object"})


def imports(tree: ast.Module) -> dict[str, str]:
    """Local name -> qualified name, from the module's top-level imports."""
    names: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    names[a.asname] = a.name
                else:
                    top = a.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


@dataclass(frozen=True)
class Resolver:
    """Turns annotation and call expressions into qualified names, within one module."""

    names: dict[str, str]
    classes: dict[str, ast.ClassDef]
    where: str  # "predict.py", for messages

    def qualname(self, node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            if node.id in self.names:
                return self.names[node.id]
            if node.id in self.classes:
                return f"__main__.{node.id}"
            return f"builtins.{node.id}" if node.id in BUILTINS else node.id
        if isinstance(node, ast.Attribute):
            base = self.qualname(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def _parse_str(self, text: str, what: str) -> ast.expr:
        try:
            return ast.parse(text, mode="eval").body
        except SyntaxError:
            raise InvalidInput(f"{self.where}: {what}: cannot read the annotation {text!r}") from None

    def unwrap_optional(self, node: ast.expr, what: str) -> tuple[ast.expr, bool]:
        """(the annotation without ``None``, whether None was allowed)."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node = self._parse_str(node.value, what)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            parts = _flatten_or(node)
        elif isinstance(node, ast.Subscript) and self.qualname(node.value) in OPTIONAL_TYPES:
            return node.slice, True
        elif isinstance(node, ast.Subscript) and self.qualname(node.value) in UNION_TYPES:
            parts = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        else:
            return node, False
        rest = [p for p in parts if not (isinstance(p, ast.Constant) and p.value is None)]
        if len(rest) != 1:
            raise InvalidInput(f"{self.where}: {what}: a union of several types is not supported; use one type")
        return rest[0], len(rest) != len(parts)

    def input_schema(self, node: ast.expr, what: str) -> tuple[dict[str, Any], bool]:
        """(the JSON schema of an input annotation, whether it is Optional)."""
        inner, optional = self.unwrap_optional(node, what)
        if isinstance(inner, ast.Subscript) and self.qualname(inner.value) in LIST_TYPES:
            item, item_optional = self.unwrap_optional(inner.slice, what)
            if item_optional:
                raise InvalidInput(f"{self.where}: {what}: list items cannot be Optional")
            return {"type": "array", "items": self._primitive(item, what, allow_any=False)}, optional
        if isinstance(inner, ast.Subscript) or self.qualname(inner) in LIST_TYPES:
            raise InvalidInput(f"{self.where}: {what}: unsupported type {ast.unparse(inner)}; use list[T] of one type")
        return self._primitive(inner, what, allow_any=False), optional

    def _primitive(self, node: ast.expr, what: str, *, allow_any: bool) -> dict[str, Any]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node = self._parse_str(node.value, what)
        name = self.qualname(node)
        if name in PRIMITIVES:
            return dict(PRIMITIVES[name])
        if name in ANY_TYPES:
            if allow_any:
                return {"type": "object"}
            raise InvalidInput(
                f"{self.where}: {what}: an input cannot be {ast.unparse(node)}; "
                "use str, int, float, bool, cog.Path or list[...]"
            )
        if name == "pathlib.Path":
            raise InvalidInput(f"{self.where}: {what}: use cog.Path, not pathlib.Path, for files")
        raise InvalidInput(
            f"{self.where}: {what}: unsupported type {ast.unparse(node)}; use str, int, float, bool, "
            "cog.Path, cog.File, cog.Secret or list[...]"
        )

    def output_schema(self, node: ast.expr) -> tuple[dict[str, Any], bool]:
        """(the Output schema, whether predict() is a generator by its annotation)."""
        what = "the return type of predict()"
        inner, optional = self.unwrap_optional(node, what)
        out: dict[str, Any] = {"title": "Output"}
        if isinstance(inner, ast.Subscript):
            base = self.qualname(inner.value)
            args = list(inner.slice.elts) if isinstance(inner.slice, ast.Tuple) else [inner.slice]
            if base in ITERATOR_TYPES or base in CONCATENATE_TYPES:
                out.update({"type": "array", "items": self._output_item(args[0], what)})
                out["x-cog-array-type"] = "iterator"
                if base in CONCATENATE_TYPES:
                    out["x-cog-array-display"] = "concatenate"
                return out, True
            if base in LIST_TYPES:
                out.update({"type": "array", "items": self._output_item(args[0], what)})
                return out, False
            if base in ANY_TYPES:
                out["type"] = "object"
                return out, False
            raise InvalidInput(f"{self.where}: {what}: unsupported type {ast.unparse(inner)}")
        name = self.qualname(inner)
        if name in CONCATENATE_TYPES:
            out.update({"type": "array", "items": {"type": "string"}, "x-cog-array-type": "iterator"})
            out["x-cog-array-display"] = "concatenate"
            return out, True
        if name and name.startswith("__main__."):
            out.update(self._object(self.classes[name.removeprefix("__main__.")]))
            return out, False
        out.update(self._output_item(inner, what))
        if optional:
            out["nullable"] = True
        return out, False

    def _output_item(self, node: ast.expr, what: str) -> dict[str, Any]:
        inner, _ = self.unwrap_optional(node, what)
        if isinstance(inner, ast.Subscript) and self.qualname(inner.value) in LIST_TYPES:
            return {"type": "array", "items": self._primitive(inner.slice, what, allow_any=True)}
        name = self.qualname(inner)
        if name and name.startswith("__main__."):
            return self._object(self.classes[name.removeprefix("__main__.")])
        return self._primitive(inner, what, allow_any=True)

    def _object(self, cls: ast.ClassDef) -> dict[str, Any]:
        """An output class (cog.BaseModel or a dataclass-like one): its annotated fields."""
        props: dict[str, Any] = {}
        required: list[str] = []
        for stmt in cls.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                field = stmt.target.id
                what = f"field {field!r} of {cls.name}"
                schema, optional = self._field(stmt.annotation, what)
                if optional:
                    schema["nullable"] = True
                elif stmt.value is None:
                    required.append(field)
                schema["title"] = field.replace("_", " ").title()
                props[field] = schema
        out: dict[str, Any] = {"type": "object", "properties": props}
        if required:
            out["required"] = required
        return out

    def _field(self, node: ast.expr, what: str) -> tuple[dict[str, Any], bool]:
        inner, optional = self.unwrap_optional(node, what)
        if isinstance(inner, ast.Subscript) and self.qualname(inner.value) in LIST_TYPES:
            return {"type": "array", "items": self._primitive(inner.slice, what, allow_any=True)}, optional
        return self._primitive(inner, what, allow_any=True), optional


def _flatten_or(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _flatten_or(node.left) + _flatten_or(node.right)
    return [node]


def yields(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether the function's own body yields (nested functions and classes do not count)."""
    stack: list[ast.AST] = list(fn.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Yield | ast.YieldFrom):
            return True
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        stack.extend(ast.iter_child_nodes(node))
    return False
