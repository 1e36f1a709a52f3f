"""The length limits reminderd/openapi.yaml declares for requests (`maxLength`), enforced as written:
the document is the one place a limit is stated, so a field it bounds can never be forgotten.

`RequestLimits.from_document()` reads, for each operation, the maxLength of its query and path
parameters and a tree of the bounded members of its JSON body (through `$ref`, `properties`,
`items`, `additionalProperties` and the branches of `allOf`/`anyOf`/`oneOf`); members that bound
nothing (a payload) are not walked. A string is measured as JSON Schema measures it, in characters
(code points). Pure: the API's read_json and its guard ask it, and raise the Problem it names.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Bounds", "RequestLimits", "TooLong"]

METHODS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True)
class Bounds:
    """What a schema bounds: its own maxLength (for a string), and those of its members."""

    max_length: int | None = None
    properties: Mapping[str, Bounds] = field(default_factory=dict)
    items: Bounds | None = None
    other_properties: Bounds | None = None  # additionalProperties


@dataclass(frozen=True)
class TooLong:
    """A string longer than its limit, at `path` (the body's members, or a parameter's name)."""

    path: tuple[str | int, ...]
    length: int
    max_length: int

    def detail(self) -> str:
        where = "/".join(str(part) for part in self.path)
        return f"{where} is {self.length:,} characters long, more than the {self.max_length:,} allowed"


@dataclass(frozen=True)
class OperationLimits:
    parameters: Mapping[str, int]  # query and path parameters by name
    body: Bounds | None


class RequestLimits:
    def __init__(self, operations: Mapping[tuple[str, str], OperationLimits]) -> None:
        self._operations = operations

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> RequestLimits:
        reader = _Reader(document)
        operations: dict[tuple[str, str], OperationLimits] = {}
        for path, item in (document.get("paths") or {}).items():
            shared = item.get("parameters") or []
            for method in METHODS:
                operation = item.get(method)
                if operation is None:
                    continue
                parameters = {}
                for parameter in [*shared, *(operation.get("parameters") or [])]:
                    parameter = reader.resolve(parameter)
                    bound = reader.bounds(parameter.get("schema") or {})
                    if parameter.get("in") in ("query", "path") and bound and bound.max_length is not None:
                        parameters[parameter["name"]] = bound.max_length
                content = (reader.resolve(operation.get("requestBody") or {}).get("content") or {})
                schema = (content.get("application/json") or {}).get("schema")
                body = reader.bounds(schema) if schema is not None else None
                if parameters or body is not None:
                    operations[(method.upper(), path)] = OperationLimits(parameters, body)
        return cls(operations)

    def operations(self) -> Mapping[tuple[str, str], OperationLimits]:
        return self._operations

    def parameters_too_long(self, method: str, path: str, *given: Mapping[str, str]) -> TooLong | None:
        """The first parameter of `given` (the path's, the query's: by name) over its limit."""
        limits = self._operations.get((method, path))
        if limits is None:
            return None
        for name, max_length in limits.parameters.items():
            for source in given:
                value = source.get(name)
                if value is not None and len(value) > max_length:
                    return TooLong((name,), len(value), max_length)
        return None

    def body_too_long(self, method: str, path: str, document: Any) -> Iterator[TooLong]:
        """Each bounded string of the JSON body over its limit, in document order."""
        limits = self._operations.get((method, path))
        if limits is not None and limits.body is not None:
            yield from too_long(limits.body, document, ())

    def element_bounds(self, method: str, path: str, at: tuple[str | int, ...]) -> Bounds | None:
        """The bounds of the body's member at `at` (an int: an array's element): for an element a
        handler judges alone (a batch's message, a contact), which read_json leaves to it."""
        limits = self._operations.get((method, path))
        bounds = limits.body if limits is not None else None
        for part in at:
            if bounds is None:
                return None
            if isinstance(part, int):
                bounds = bounds.items
            else:
                bounds = bounds.properties.get(part, bounds.other_properties)
        return bounds


def too_long(bounds: Bounds | None, value: Any, path: tuple[str | int, ...]) -> Iterator[TooLong]:
    if bounds is None:
        return
    if isinstance(value, str):
        if bounds.max_length is not None and len(value) > bounds.max_length:
            yield TooLong(path, len(value), bounds.max_length)
    elif isinstance(value, dict):
        for name, member in value.items():
            inner = bounds.properties.get(name, bounds.other_properties)
            if inner is not None:
                yield from too_long(inner, member, (*path, name))
    elif isinstance(value, list) and bounds.items is not None:
        for index, element in enumerate(value):
            yield from too_long(bounds.items, element, (*path, index))


class _Reader:
    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        self._resolving: set[str] = set()

    def resolve(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            target: Any = self.document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            node = target
        return node

    def bounds(self, schema: Any) -> Bounds | None:
        """The schema's bounds, or None when nothing in it has a maxLength."""
        reference = schema.get("$ref") if isinstance(schema, dict) else None
        if reference is not None:
            if reference in self._resolving:  # a recursive schema: its inner levels unbounded
                return None
            self._resolving.add(reference)
            try:
                return self.bounds(self.resolve(schema))
            finally:
                self._resolving.discard(reference)
        if not isinstance(schema, dict):
            return None
        found = [
            Bounds(
                schema.get("maxLength"),
                {name: inner for name, child in (schema.get("properties") or {}).items()
                 if (inner := self.bounds(child)) is not None},
                self.bounds(schema.get("items")),
                self.bounds(schema.get("additionalProperties")),
            )
        ]
        for key in ("allOf", "anyOf", "oneOf"):
            found += [inner for child in schema.get(key) or [] if (inner := self.bounds(child)) is not None]
        merged = _merged(found)
        empty = merged.max_length is None and not merged.properties and merged.items is None
        return None if empty and merged.other_properties is None else merged


def _merged(all_bounds: list[Bounds]) -> Bounds:
    """Branches as one: each member bounded by the loosest limit a branch gives it (a value one
    branch allows is never refused for another's)."""
    if len(all_bounds) == 1:
        return all_bounds[0]
    lengths = [b.max_length for b in all_bounds if b.max_length is not None]
    names = {name for b in all_bounds for name in b.properties}
    properties = {
        name: _merged([b.properties[name] for b in all_bounds if name in b.properties]) for name in names
    }
    items = [b.items for b in all_bounds if b.items is not None]
    others = [b.other_properties for b in all_bounds if b.other_properties is not None]
    return Bounds(
        max(lengths) if lengths else None,
        properties,
        _merged(items) if items else None,
        _merged(others) if others else None,
    )
