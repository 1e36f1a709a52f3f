"""reminderd/openapi.yaml says what its author meant: YAML's flow mappings turn an unquoted comma
into a second key (`{description: what was understood, as … says it}` is a description and a
key `as … says it` with the value null), which openapi-spec-validator accepts as an unknown
extension-less keyword. So: no null anywhere a value is expected, and every schema made of known
keywords only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from reminderd.api import openapi_document
from reminderd.lifecycle import Status

# JSON Schema 2020-12 (what OpenAPI 3.1 schemas are) and OpenAPI's own schema keywords.
SCHEMA_KEYWORDS = frozenset({
    "$ref", "$defs", "$id", "$schema", "$comment", "title", "description", "type", "enum", "const",
    "default", "examples", "example", "deprecated", "readOnly", "writeOnly", "format",
    "properties", "required", "additionalProperties", "patternProperties", "propertyNames",
    "minProperties", "maxProperties", "dependentRequired", "dependentSchemas", "unevaluatedProperties",
    "items", "prefixItems", "contains", "minItems", "maxItems", "uniqueItems", "minContains",
    "maxContains", "unevaluatedItems", "minLength", "maxLength", "pattern", "contentEncoding",
    "contentMediaType", "contentSchema", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf", "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "discriminator", "xml",
    "externalDocs",
})
# Where null is a value and not a mistake: an example, a default, a constant, a member of an enum.
NULL_ALLOWED_UNDER = frozenset({"example", "default", "const", "enum", "examples"})
TYPES = frozenset({"string", "integer", "number", "boolean", "object", "array", "null"})


def nulls(node: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Paths of null values outside NULL_ALLOWED_UNDER."""
    if NULL_ALLOWED_UNDER & set(path[-2:]):
        return
    if node is None:
        yield path
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from nulls(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from nulls(value, (*path, index))


def schemas(node: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]:
    """Every schema object inside the schema `node`, with its path (itself first)."""
    if not isinstance(node, dict):
        return
    yield path, node
    for key in ("properties", "patternProperties", "$defs", "dependentSchemas"):
        for name, child in (node.get(key) or {}).items():
            yield from schemas(child, (*path, key, name))
    for key in ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
                "unevaluatedItems", "unevaluatedProperties", "contentSchema"):
        yield from schemas(node.get(key), (*path, key))
    for key in ("allOf", "anyOf", "oneOf", "prefixItems"):
        for index, child in enumerate(node.get(key) or []):
            yield from schemas(child, (*path, key, index))


def document_schemas(document: dict[str, Any]) -> Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]:
    """The schemas of the components and of every parameter, body and answer."""
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        yield from schemas(schema, ("components", "schemas", name))

    def found(node: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "schema":
                    yield from schemas(value, (*path, key))
                elif key != "schemas":
                    yield from found(value, (*path, key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from found(value, (*path, index))

    yield from found({key: value for key, value in document.items() if key != "components"}, ())
    yield from found({key: value for key, value in document.get("components", {}).items() if key != "schemas"},
                     ("components",))


def problems_of(document: dict[str, Any]) -> list[str]:
    said = [f"null at {'/'.join(map(str, path))}" for path in nulls(document)]
    for path, schema in document_schemas(document):
        where = "/".join(map(str, path))
        for keyword in schema:
            if keyword not in SCHEMA_KEYWORDS and not str(keyword).startswith("x-"):
                said.append(f"unknown keyword {keyword!r} in {where}")
        if "description" in schema and not isinstance(schema["description"], str):
            said.append(f"a description that is not text in {where}")
        declared = schema.get("type")
        for kind in declared if isinstance(declared, list) else [declared] if declared else []:
            if kind not in TYPES:
                said.append(f"unknown type {kind!r} in {where}")
        for name, child in (schema.get("properties") or {}).items():
            if not isinstance(child, dict):
                said.append(f"property {name!r} of {where} is not a schema")
    return said


def test_the_document_has_no_stray_keys_or_nulls() -> None:
    assert problems_of(openapi_document()) == []


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("{type: string, description: what was understood, as it says}",
         ["null at components/schemas/S/properties/p/as it says",
          "unknown keyword 'as it says' in components/schemas/S/properties/p"]),
        ("{type: strin}", ["unknown type 'strin' in components/schemas/S/properties/p"]),
        ("{type: string, descripton: typo}",
         ["unknown keyword 'descripton' in components/schemas/S/properties/p"]),
        ('{type: string, description: "quoted, as it should be", example: null}', []),
    ],
    ids=["flow-mapping-comma", "type", "keyword", "well-formed"],
)
def test_the_check_finds_what_it_looks_for(text: str, said: list[str]) -> None:
    document = yaml.safe_load(
        "openapi: 3.1.0\ncomponents:\n  schemas:\n    S:\n      type: object\n      properties:\n"
        f"        p: {text}\n"
    )
    assert problems_of(document) == said


@pytest.mark.parametrize("route", ["/v1/messages", "/v1/messages/batch"])
def test_scheduling_for_a_contact_the_tenant_lacks_is_a_documented_404(route: str) -> None:
    # A message may name a contact_id (issue 14); one the tenant has no contact of is refused with
    # P0002, a 404 (tests/integration/test_api_audiences.py): schemathesis holds answers to this list.
    responses = openapi_document()["paths"][route]["post"]["responses"]
    assert responses["404"] == {"$ref": "#/components/responses/UnknownContact"}


def test_stats_counts_name_every_status() -> None:
    """GET /v1/stats counts every status reminderd.lifecycle.Status names (the query is given the
    enum's values), and the document says so: a status added later is listed, or this fails."""
    counts = openapi_document()["components"]["schemas"]["Stats"]["properties"]["counts"]
    assert counts["required"] == [status.value for status in Status]
    assert sorted(counts["properties"]) == sorted(status.value for status in Status)


def test_the_document_is_parsed_once_and_each_caller_gets_a_copy_equal_to_pyyamls_own_parse() -> None:
    """Parsed once per process (libyaml where there is one: every `reminderd serve` start and
    every test's API paid 0.37 s for the pure-Python parser), each caller's copy its own."""
    from pathlib import Path

    import reminderd

    text = (Path(reminderd.__file__).parent / "openapi.yaml").read_text(encoding="utf-8")
    first = openapi_document()
    assert first == yaml.safe_load(text)  # the fast loader reads it as the safe one does
    first["paths"].clear()
    first["info"]["title"] = "changed by a caller"
    second = openapi_document()
    assert second == yaml.safe_load(text) and second["paths"]  # nobody sees another caller's change
    from reminderd.api import _parsed_openapi_document

    assert _parsed_openapi_document.cache_info().misses == 1  # parsed once for all of them
