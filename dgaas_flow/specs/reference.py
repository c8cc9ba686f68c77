"""The field reference of workflows and provider profiles in Markdown, made from their JSON Schema,
so that docs/reference/ can never drift from the models (a test compares them)."""

from __future__ import annotations

import json
from typing import Any, Literal

from dgaas_flow.specs.loading import json_schema

TITLES = {"workflow": "Workflow file", "provider": "Provider profile file"}


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _type(prop: dict[str, Any] | bool) -> str:
    """A field's type as a reader writes it: `a | b`, literal choices quoted, nested models linked."""
    if not isinstance(prop, dict):  # `additionalProperties: true`: a mapping to anything
        return "any"
    if "$ref" in prop:
        name = _ref_name(prop["$ref"])
        return f"[{name}](#{name.lower()})"
    if "const" in prop:
        return f"`{json.dumps(prop['const'])}`"
    if "enum" in prop:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in prop["enum"])
    for union in ("anyOf", "oneOf"):
        if union in prop:
            return " \\| ".join(_type(p) for p in prop[union])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}))}"
    if kind == "object" and "additionalProperties" in prop:
        return f"mapping to {_type(prop['additionalProperties'])}"
    return str(kind)


def _default(prop: dict[str, Any]) -> str:
    """The default as YAML would read it; a nested model or list made per instance has none in the
    schema: its own defaults, or empty."""
    if "default" in prop:
        return f"`{json.dumps(prop['default'])}`"
    return "`[]`" if prop.get("type") == "array" else "its fields' defaults"


def _table(model: dict[str, Any]) -> list[str]:
    required = set(model.get("required", ()))
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, prop in model.get("properties", {}).items():
        default = "required" if name in required else _default(prop)
        meaning = prop.get("description", "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{name}` | {_type(prop)} | {default} | {meaning} |")
    return rows


def markdown(which: Literal["workflow", "provider"]) -> str:
    """Every model of the schema, the file's top level first, each as a table of its fields."""
    schema = json_schema(which)
    defs: dict[str, Any] = schema.get("$defs", {})
    lines = [f"# {TITLES[which]} reference", "",
             f"Generated from `dgaas-flow schema {which}` by `dgaas-flow schema {which} --markdown`; "
             "a test fails when it drifts. Unknown fields are errors.", ""]
    order = [(schema.get("title", which), schema)] + sorted(defs.items())
    for name, model in order:
        lines += [f"## {name}", ""]
        if model.get("description"):
            lines += [" ".join(model["description"].split()), ""]
        if model.get("properties"):
            lines += _table(model)
        else:
            lines.append(f"One of: {_type(model)}.")
        lines.append("")
    return "\n".join(lines)
