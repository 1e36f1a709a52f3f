"""The JavaScript SDK's types (clients/js/src/wire.d.ts) are generated from the OpenAPI document and
current; the generator and the runtime camelCase every name alike; the declared API covers every
operation; the package is ESM without runtime dependencies."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import yaml
from support import JS, ROOT, node

GENERATOR = JS / "generate_types.py"


def test_the_committed_types_are_generated_from_the_current_document() -> None:
    checked = subprocess.run([sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True,
                             check=False)
    assert checked.returncode == 0, checked.stderr


def test_the_generator_and_the_runtime_camelcase_every_name_of_the_document_alike() -> None:
    document = yaml.safe_load((ROOT / "reminderd" / "openapi.yaml").read_text(encoding="utf-8"))
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            names.update(node.get("properties", {}))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    for item in document["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict):
                names.update(p["name"] for p in operation.get("parameters", []) if "name" in p)
    script = ("import { camel, snake } from './src/index.js';"
              "const names = JSON.parse(process.argv[1]);"
              "console.log(JSON.stringify(names.map((n) => [camel(n), snake(camel(n))])));")
    done = subprocess.run([node(), "--input-type=module", "-e", script, json.dumps(sorted(names))], cwd=JS,
                          capture_output=True, text=True, check=True)
    sys.path.insert(0, str(JS))
    try:
        from generate_types import camel
    finally:
        sys.path.remove(str(JS))
    for name, (in_js, back) in zip(sorted(names), json.loads(done.stdout), strict=True):
        assert in_js == camel(name), name
        if "_" in name and not re.search(r"_\d", name):  # last_1h -> last1h is read-only, never sent
            assert back == name, name


def test_the_declared_api_covers_every_operation_of_the_document() -> None:
    declared = (JS / "src" / "index.d.ts").read_text(encoding="utf-8")
    implemented = (JS / "src" / "index.js").read_text(encoding="utf-8")
    methods = {
        "scheduleMessage": "schedule", "scheduleBatch": "scheduleMany", "getMessage": "get",
        "listMessages": "list", "cancelMessage": "cancel", "cancelByRef": "cancelRef",
        "cancelMatching": "cancelMatching", "updateMessage": "update", "pauseMessage": "pause",
        "resumeMessage": "resume", "requeueMessage": "requeue", "sendNow": "sendNow", "getTenant": "tenant",
        "updateTenant": "updateTenant", "pauseTenant": "pauseTenant", "resumeTenant": "resumeTenant",
        "rotateSecret": "rotateSecret", "preview": "preview", "stats": "stats",
        "upsertContacts": "upsertContacts", "getContact": "contact", "deleteContact": "deleteContact",
        "contactMessages": "contactMessages", "listAudiences": "audiences", "dropAudience": "dropAudience",
        "addToAudience": "addToAudience", "removeFromAudience": "removeFromAudience",
        "createBroadcast": "broadcast", "listBroadcasts": "broadcasts", "getBroadcast": "getBroadcast",
        "approveBroadcast": "approveBroadcast", "rejectBroadcast": "rejectBroadcast",
        "cancelBroadcast": "cancelBroadcast", "scheduleCadence": "scheduleCadence",
    }
    wire = (JS / "src" / "wire.d.ts").read_text(encoding="utf-8")
    operations = set(re.findall(r"^  (\w+): \{ method:", wire, re.MULTILINE))
    assert operations - set(methods) == {"healthz", "readyz", "metrics", "openapi"}
    for method in methods.values():
        assert re.search(rf"^  {method}\(", declared, re.MULTILINE), f"index.d.ts declares no {method}()"
        assert re.search(rf"^  {method}\(", implemented, re.MULTILINE), f"index.js has no {method}()"


def test_each_operations_answer_type_is_the_union_of_every_success_answer_it_documents() -> None:
    document = yaml.safe_load((ROOT / "reminderd" / "openapi.yaml").read_text(encoding="utf-8"))
    wire = (JS / "src" / "wire.d.ts").read_text(encoding="utf-8")
    answers = dict(re.findall(r"^  (\w+): \{ method: .*; response: (.+) \};$", wire, re.MULTILINE))
    for item in document["paths"].values():
        for operation in item.values():
            if not isinstance(operation, dict) or "operationId" not in operation:
                continue
            named = set()
            for status, answer in operation["responses"].items():
                schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
                if str(status).startswith("2") and "$ref" in schema:
                    named.add(schema["$ref"].rsplit("/", 1)[1])
            declared = set(answers[operation["operationId"]].split(" | "))
            assert named <= declared, (operation["operationId"], named, declared)
    assert set(answers["createBroadcast"].split(" | ")) == {"BroadcastDetail", "BroadcastPreview"}


def test_the_package_is_esm_without_runtime_dependencies() -> None:
    package = json.loads((JS / "package.json").read_text(encoding="utf-8"))
    assert package["type"] == "module"
    assert package["exports"]["."] == {"types": "./src/index.d.ts", "default": "./src/index.js"}
    assert package["types"] == "./src/index.d.ts"
    assert "dependencies" not in package
    assert package["engines"]["node"] == ">=20"
    runtime = (JS / "src" / "index.js").read_text(encoding="utf-8")
    imported = re.findall(r"""\bimport\b[^;]*?["']([^"']+)["']""", runtime)
    assert all(name.startswith(("./", "node:")) for name in imported), imported  # builtins only


def test_the_declarations_compile_and_type_what_users_write() -> None:
    """tsc --strict over src/index.d.ts (and the generated wire.d.ts it imports) and test/types.ts,
    a typed use of every method whose @ts-expect-error lines must each be an error."""
    tsc = JS / "node_modules" / ".bin" / "tsc"
    assert tsc.exists(), "TypeScript is not installed in clients/js: `make test` (.ci/setup --test) runs npm ci"
    done = subprocess.run([node(), str(tsc), "-p", str(JS)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr

