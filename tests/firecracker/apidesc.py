"""The project's own description of the part of Firecracker's API that fireroute and these
tests use, so the contract tests run in any checkout (the full OpenAPI specs live outside the
repository, in ``../shared/reference``).

``firecracker_api.json`` holds, per spec version, a Swagger 2.0 document with only facts: the
paths and methods used, whether an operation is pre-boot or post-boot only (``x-boot``), its
body parameter, and every definition those bodies reach (field names, types, required
fields, patterns, formats, enums, bounds; no prose). :func:`describe` makes it from a full
spec; ``test_fc_apidesc.py`` checks, wherever the full specs are (always under CI), that the
file is exactly what they say, and ``FIREROUTE_UPDATE_GOLDEN=1`` rewrites it from them.
"""

from __future__ import annotations

import json
from pathlib import Path

from .specschema import Spec

DESCRIPTION = Path(__file__).with_name("firecracker_api.json")

#: The paths fireroute sends to, and those the tests drive the stand-in through.
PATHS = (
    "/",
    "/actions",
    "/boot-source",
    "/machine-config",
    "/mmds",
    "/mmds/config",
    "/network-interfaces/{iface_id}",
    "/snapshot/load",
    "/version",
    "/vm/config",
)
#: Definitions the tests validate against by name (the config file, limiters, interfaces).
DEFINITIONS = ("FullVmConfiguration", "NetworkInterface", "RateLimiter")
#: The schema keywords the validator (specschema) reads; everything else is prose or examples.
SCHEMA_KEYS = (
    "$ref",
    "type",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "enum",
    "minimum",
    "maximum",
    "pattern",
    "format",
)
METHODS = ("get", "put", "patch", "post", "delete")


def load(version: str) -> Spec:
    """The described API of ``version`` (a key of the description file)."""
    documents = json.loads(DESCRIPTION.read_text())
    if version not in documents:
        raise KeyError(f"{DESCRIPTION.name} describes {sorted(documents)}, not {version}")
    return Spec(documents[version])


def _facts(schema: object) -> object:
    if not isinstance(schema, dict):
        return schema
    out: dict = {}
    for key in SCHEMA_KEYS:
        if key not in schema:
            continue
        value = schema[key]
        if key == "properties":
            value = {name: _facts(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties"):
            value = _facts(value)
        out[key] = value
    return out


def _refs(schema: object) -> list[str]:
    """The definition names a (fact-only) schema refers to, at any depth."""
    if isinstance(schema, list):
        return [name for item in schema for name in _refs(item)]
    if not isinstance(schema, dict):
        return []
    found = []
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/definitions/"):
        found.append(ref.removeprefix("#/definitions/"))
    for value in schema.values():
        found += _refs(value)
    return found


def describe(document: dict) -> dict:
    """The description of one full spec (a parsed Swagger 2.0 document)."""
    paths: dict = {}
    for template in PATHS:
        ops = document["paths"].get(template)
        if ops is None:
            continue
        paths[template] = {}
        for method in METHODS:
            if method not in ops:
                continue
            op: dict = {}
            boot = Spec.boot_phase(ops[method])
            if boot:
                op["x-boot"] = boot
            body = Spec.body_parameter(ops[method])
            if body is not None:
                op["parameters"] = [
                    {
                        "in": "body",
                        "name": body["name"],
                        "required": bool(body.get("required")),
                        "schema": _facts(body["schema"]),
                    }
                ]
            paths[template][method] = op
    wanted = [name for op in paths.values() for name in _refs(op)] + list(DEFINITIONS)
    definitions: dict = {}
    while wanted:
        name = wanted.pop()
        if name not in definitions:
            definitions[name] = _facts(document["definitions"][name])
            wanted += _refs(definitions[name])
    return {
        "swagger": "2.0",
        "info": {"version": str(document["info"]["version"])},
        "paths": paths,
        "definitions": dict(sorted(definitions.items())),
    }


def dumps(documents: dict) -> str:
    return json.dumps(documents, indent=1, sort_keys=False) + "\n"
