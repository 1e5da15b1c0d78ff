"""A small validator for the JSON-schema subset used by Firecracker's Swagger 2.0 spec.

Supported: ``$ref`` (``#/definitions/...``), ``type``, ``required``, ``properties``,
``additionalProperties``, ``items``, ``enum``, ``minimum``/``maximum``, ``pattern``,
and ``format`` (int32/int64 ranges; any other format value is taken as a regular
expression, because Firecracker writes the MMDS address pattern under ``format``).

Firecracker deserialises its bodies with serde ``deny_unknown_fields``, so an object
schema that lists ``properties`` rejects any other key unless it says
``additionalProperties: true``. An object schema with no ``properties`` at all is a
free-form map (e.g. MMDS contents).
"""

from __future__ import annotations

import re
from pathlib import Path

_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_PLAIN_FORMATS = {"float", "double", "byte", "binary", "date", "date-time", "password"}


class SpecError(Exception):
    pass


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _type_ok(expected: str, value: object) -> bool:
    actual = _json_type(value)
    if expected == "number":
        return actual in ("integer", "number")
    return actual == expected


class Spec:
    """One Firecracker OpenAPI (Swagger 2.0) document."""

    def __init__(self, document: dict) -> None:
        if document.get("swagger") != "2.0":
            raise SpecError("expected a Swagger 2.0 document")
        self.document = document
        self.definitions: dict = document.get("definitions", {})
        self.version: str = str(document["info"]["version"])
        self._routes = [
            (template, self._template_regex(template), ops)
            for template, ops in document["paths"].items()
        ]

    @classmethod
    def load(cls, path: Path) -> Spec:
        import yaml

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        with open(path, encoding="utf-8") as fh:
            return cls(yaml.load(fh, Loader=loader))

    # -- paths --------------------------------------------------------------------

    @staticmethod
    def _template_regex(template: str) -> re.Pattern:
        pattern = ""
        for literal, name in re.findall(r"([^{]*)(?:\{(\w+)\})?", template):
            pattern += re.escape(literal)
            if name:
                pattern += f"(?P<{name}>[^/]+)"
        return re.compile(f"^{pattern}$")

    def route(self, path: str) -> tuple[str, dict, dict] | None:
        """(template, operations by method, path parameters) for a request path."""
        for template, regex, ops in self._routes:
            match = regex.match(path)
            if match:
                return template, ops, match.groupdict()
        return None

    @staticmethod
    def boot_phase(operation: dict) -> str | None:
        """``"pre"``/``"post"`` for a pre-boot/post-boot only operation: ``x-boot`` in the
        project's description (``apidesc``), its summary's words in a full spec."""
        if "x-boot" in operation:
            return operation["x-boot"]
        summary = operation.get("summary", "")
        if "Pre-boot only" in summary:
            return "pre"
        return "post" if "Post-boot only" in summary else None

    @staticmethod
    def body_parameter(operation: dict) -> dict | None:
        for param in operation.get("parameters", []):
            if param.get("in") == "body":
                return param
        return None

    # -- schemas ------------------------------------------------------------------

    def resolve(self, schema: dict) -> dict:
        seen = set()
        while "$ref" in schema:
            ref = schema["$ref"]
            if ref in seen or not ref.startswith("#/definitions/"):
                raise SpecError(f"cannot resolve $ref {ref!r}")
            seen.add(ref)
            name = ref[len("#/definitions/") :]
            if name not in self.definitions:
                raise SpecError(f"unknown definition {name!r}")
            schema = self.definitions[name]
        return schema

    def definition(self, name: str) -> dict:
        return self.definitions[name]

    def errors(self, value: object, schema: dict, where: str = "$") -> list[str]:
        """Every way ``value`` breaks ``schema`` (an empty list when it conforms)."""
        out: list[str] = []
        self._check(value, self.resolve(schema), where, out)
        return out

    def _check(self, value: object, schema: dict, where: str, out: list[str]) -> None:
        expected = schema.get("type")
        if expected is None and "properties" in schema:
            expected = "object"
        if expected is not None and not _type_ok(expected, value):
            out.append(f"{where}: invalid type: {_json_type(value)} {value!r}, expected {expected}")
            return

        if "enum" in schema and value not in schema["enum"]:
            choices = ", ".join(f"`{c}`" for c in schema["enum"])
            out.append(f"{where}: unknown variant `{value}`, expected one of {choices}")

        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if "minimum" in schema and value < schema["minimum"]:
                out.append(f"{where}: {value} is less than the minimum {schema['minimum']}")
            if "maximum" in schema and value > schema["maximum"]:
                out.append(f"{where}: {value} is more than the maximum {schema['maximum']}")
            fmt = schema.get("format")
            if fmt in _INT_RANGES:
                low, high = _INT_RANGES[fmt]
                if not low <= value <= high:
                    out.append(f"{where}: {value} does not fit in {fmt}")

        if isinstance(value, str):
            if "pattern" in schema and not re.search(schema["pattern"], value):
                out.append(f"{where}: {value!r} does not match pattern {schema['pattern']!r}")
            fmt = schema.get("format")
            custom = fmt and fmt not in _INT_RANGES and fmt not in _PLAIN_FORMATS
            if custom and not re.fullmatch(fmt, value):
                out.append(f"{where}: {value!r} does not match format {fmt!r}")

        if isinstance(value, list) and "items" in schema:
            items = self.resolve(schema["items"])
            for index, item in enumerate(value):
                self._check(item, items, f"{where}[{index}]", out)

        if isinstance(value, dict):
            properties = schema.get("properties")
            for name in schema.get("required", []):
                if name not in value:
                    out.append(f"{where}: missing field `{name}`")
            if properties is None:
                return  # free-form object
            extra = schema.get("additionalProperties", False)
            for key, item in value.items():
                if key in properties:
                    self._check(item, self.resolve(properties[key]), f"{where}.{key}", out)
                elif isinstance(extra, dict):
                    self._check(item, self.resolve(extra), f"{where}.{key}", out)
                elif extra is not True:
                    known = ", ".join(f"`{p}`" for p in properties)
                    out.append(f"{where}: unknown field `{key}`, expected one of {known}")
