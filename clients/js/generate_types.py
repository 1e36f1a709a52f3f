"""Write clients/js/src/wire.d.ts, the JavaScript SDK's types, from reminderd/openapi.yaml.

    python clients/js/generate_types.py          # write it
    python clients/js/generate_types.py --check  # exit 1 when the committed file is stale

The SDK speaks camelCase and the wire snake_case: every property name is camelCased here exactly as
src/index.js converts it at run time (`ref_id` -> `refId`, `last_1h` -> `last1h`), except inside a
`payload` or a contact's `attributes`, which are the user's own JSON and cross untouched. Names: each schema of
components.schemas keeps its name; an operation's inline body, answer and query parameters become
<OperationId>Body, <OperationId>Response and <OperationId>Query; `Operations` maps each operationId
to its method, path and those types. In what the SDK sends, an instant may also be a `Date`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "reminderd" / "openapi.yaml"
OUTPUT = Path(__file__).resolve().parent / "src" / "wire.d.ts"
METHODS = ("get", "post", "put", "patch", "delete")
Schema = dict[str, Any]


def camel(name: str) -> str:
    """`ref_id` -> `refId`; the same rule as `camel()` in src/index.js."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def snake(name: str) -> str:
    """`refId` -> `ref_id`; the same rule as `snake()` in src/index.js."""
    return re.sub(r"[A-Z]", lambda match: "_" + match[0].lower(), name)


def pascal(name: str) -> str:
    return name[:1].upper() + name[1:]


class Generator:
    def __init__(self, document: Schema) -> None:
        self.document = document
        self.schemas: dict[str, Schema] = document["components"]["schemas"]
        self.sent = self._reached(self._request_roots())  # schemas that appear in what clients send
        self.lines: list[str] = []

    # Which component schemas are part of a request --------------------------------------------

    def _operations(self) -> Iterator[tuple[str, str, Schema, list[Schema]]]:
        for path, item in self.document["paths"].items():
            shared = item.get("parameters", [])
            for method in METHODS:
                if method in item:
                    operation = item[method]
                    parameters = [self._resolve(p) for p in [*shared, *operation.get("parameters", [])]]
                    yield path, method, operation, parameters

    def _resolve(self, node: Schema) -> Schema:
        while "$ref" in node:
            *_, kind, name = node["$ref"].split("/")
            node = self.document["components"][kind][name]
        return node

    def _request_roots(self) -> list[Schema]:
        roots: list[Schema] = []
        for _, _, operation, parameters in self._operations():
            body = self._resolve(operation.get("requestBody", {})).get("content", {}).get("application/json")
            if body:
                roots.append(body["schema"])
            roots += [p["schema"] for p in parameters if p["in"] == "query"]
        return roots

    def _reached(self, roots: list[Schema]) -> set[str]:
        seen: set[str] = set()

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                ref = node.get("$ref", "")
                if ref.startswith("#/components/schemas/"):
                    name = ref.rsplit("/", 1)[1]
                    if name not in seen:
                        seen.add(name)
                        walk(self.schemas[name])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(roots)
        return seen

    # Types --------------------------------------------------------------------------------------

    def type_of(self, schema: Schema, *, sent: bool, indent: str) -> str:
        if "$ref" in schema:
            return str(schema["$ref"].rsplit("/", 1)[1])
        if "allOf" in schema:
            return " & ".join(self.type_of(part, sent=sent, indent=indent) for part in schema["allOf"])
        if "oneOf" in schema or "anyOf" in schema:
            options = schema.get("oneOf") or schema["anyOf"]
            return " | ".join(self.type_of(part, sent=sent, indent=indent) for part in options)
        if "enum" in schema:
            return " | ".join(json.dumps(value) for value in schema["enum"])
        kinds = schema.get("type")
        if kinds is None:
            return "unknown"
        if isinstance(kinds, list):
            return " | ".join(self.type_of({**schema, "type": kind}, sent=sent, indent=indent)
                              for kind in kinds)
        if kinds == "null":
            return "null"
        if kinds == "string":
            return "string | Date" if sent and schema.get("format") == "date-time" else "string"
        if kinds in ("integer", "number"):
            return "number"
        if kinds == "boolean":
            return "boolean"
        if kinds == "array":
            item = self.type_of(schema.get("items", {}), sent=sent, indent=indent)
            return f"({item})[]" if "|" in item or "&" in item else f"{item}[]"
        if kinds == "object":
            return self.object_of(schema, sent=sent, indent=indent)
        raise ValueError(f"no TypeScript type for {schema!r}")

    def object_of(self, schema: Schema, *, sent: bool, indent: str) -> str:
        properties: Schema = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        if not properties:
            if isinstance(extra, dict):
                return f"Record<string, {self.type_of(extra, sent=sent, indent=indent)}>"
            return "Record<string, unknown>"
        required = set(schema.get("required", []))
        inner = indent + "  "
        lines = ["{"]
        for name, property_schema in properties.items():
            key = camel(name)
            if sent and snake(key) != name:
                raise ValueError(f"{name!r} is sent but would come back from camelCase as {snake(key)!r}")
            lines += self.doc(property_schema, inner, wire_name=name if key != name else None)
            optional = "" if name in required else "?"
            lines.append(f"{inner}{key}{optional}: {self.type_of(property_schema, sent=sent, indent=inner)};")
        lines.append(f"{indent}}}")
        return "\n".join(lines)

    def doc(self, schema: Schema, indent: str, *, wire_name: str | None = None) -> list[str]:
        parts = []
        description = schema.get("description")
        if description:
            parts.append(" ".join(str(description).split()))
        if wire_name:
            parts.append(f"(wire: `{wire_name}`)")
        if not parts:
            return []
        return [f"{indent}/** {' '.join(parts).replace('*/', '* /')} */"]

    # The file -----------------------------------------------------------------------------------

    def emit(self, name: str, schema: Schema, *, sent: bool) -> None:
        self.lines += self.doc(schema, "")
        rendered = self.type_of(schema, sent=sent, indent="")
        if rendered.startswith("{"):
            self.lines.append(f"export interface {name} {rendered}")
        else:
            self.lines.append(f"export type {name} = {rendered};")
        self.lines.append("")

    def render(self) -> str:
        info = self.document["info"]
        self.lines = [
            "// GENERATED by clients/js/generate_types.py from reminderd/openapi.yaml: do not edit.",
            f"// {info['title']}, version {info['version']}. Property names are camelCased (wire: snake_case);",
            "// a `payload` (and a contact's `attributes`) is sent and received exactly as written.",
            "",
        ]
        for name, schema in self.schemas.items():
            self.emit(name, schema, sent=name in self.sent)
        for name, response in self.document["components"].get("responses", {}).items():
            content = response.get("content", {}).get("application/json")
            if content and "$ref" not in content["schema"]:
                self.emit(name, {"description": response.get("description"), **content["schema"]}, sent=False)
        table: list[str] = []
        for path, method, operation, parameters in self._operations():
            op = pascal(operation["operationId"])
            query = [p for p in parameters if p["in"] == "query"]
            query_type = "never"
            if query:
                self.emit(f"{op}Query", {
                    "type": "object",
                    "required": [p["name"] for p in query if p.get("required")],
                    "properties": {p["name"]: {**p["schema"], **({"description": p["description"]}
                                                                 if "description" in p else {})}
                                   for p in query},
                }, sent=True)
                query_type = f"{op}Query"
            body_type = "never"
            body = self._resolve(operation.get("requestBody", {})).get("content", {}).get("application/json")
            if body:
                body_type = self._named(f"{op}Body", body["schema"], sent=True)
            answers: list[str] = []  # each success answer documented (createBroadcast: 201, its dry run 200)
            for status, answer in sorted(operation["responses"].items(), key=lambda item: str(item[0])):
                if not str(status).startswith("2"):
                    continue
                if "$ref" in answer:
                    named = answer["$ref"].rsplit("/", 1)[1]
                else:
                    content = answer.get("content", {}).get("application/json")
                    named = self._named(f"{op}Response", content["schema"], sent=False) if content else ""
                if named and named not in answers:
                    answers.append(named)
            answer_type = " | ".join(answers) or "never"
            table.append(
                f"  {operation['operationId']}: {{ method: {json.dumps(method.upper())};"
                f" path: {json.dumps(path)};"
                f" query: {query_type}; body: {body_type}; response: {answer_type} }};"
            )
        self.lines.append("/** Every operation of the document: its method, path, query, body and answer. */")
        self.lines += ["export interface Operations {", *table, "}", ""]
        self.lines.append("export type OperationId = keyof Operations;")
        return "\n".join(self.lines) + "\n"

    def _named(self, name: str, schema: Schema, *, sent: bool) -> str:
        if "$ref" in schema:
            return str(schema["$ref"].rsplit("/", 1)[1])
        self.emit(name, schema, sent=sent)
        return name


def generate(document_path: Path = DOCUMENT) -> str:
    document = yaml.safe_load(document_path.read_text(encoding="utf-8"))
    return Generator(document).render()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file differs")
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is stale: run `python clients/js/generate_types.py`",
                  file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
