"""RFC 9457 problem details: every error the HTTP API answers with, one kind per `type` URI.

The kinds and their statuses are the contract (docs/api.md lists them; the OpenAPI document names
them): a client may match on `type`. A Problem is an exception, raised by a handler and turned
into an `application/problem+json` answer by the server's middleware. Its `detail` is one line
naming what is wrong; nothing secret goes into one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:reminderd:problem:"

KINDS: dict[str, tuple[int, str]] = {
    "invalid-json": (400, "The body is not a JSON object"),
    "invalid-parameter": (400, "A query parameter or header is invalid"),
    "unauthorized": (401, "An API key is needed"),
    "forbidden": (403, "This key may not do that"),
    "not-found": (404, "Not found"),
    "method-not-allowed": (405, "Method not allowed"),
    "not-live": (409, "The message is not in a state for this"),
    "idempotency-in-flight": (409, "A request with this Idempotency-Key is still running"),
    "secret-shown-once": (409, "The secret was shown once and is not shown again"),
    "conflict": (409, "The request conflicts with what is there (a prefix in use, a decision made)"),
    "body-too-large": (413, "The body is too large"),
    "unsupported-media-type": (415, "The body must be application/json"),
    "invalid-request": (422, "The request is invalid"),
    "idempotency-mismatch": (422, "This Idempotency-Key was used for another request"),
    "database-refused": (422, "The database refused the request"),
    "rate-limited": (429, "Too many requests"),
    "internal": (500, "Internal error"),
    "busy": (503, "What the request needs is being written by another transaction"),
    "timeout": (503, "The request took too long"),
    "unavailable": (503, "The database cannot be reached right now"),
}


@dataclass(frozen=True)
class FieldError:
    """One invalid input: by JSON pointer into the body, or by query parameter or header name."""

    detail: str
    pointer: str | None = None
    parameter: str | None = None
    header: str | None = None

    def as_json(self) -> dict[str, str]:
        found = {"detail": self.detail, "pointer": self.pointer, "parameter": self.parameter,
                 "header": self.header}
        return {key: value for key, value in found.items() if value is not None}


@dataclass
class Problem(Exception):
    """An error answer. `kind` is a key of KINDS; `extra` adds members (sqlstate, hint, item)."""

    kind: str
    detail: str
    errors: Sequence[FieldError] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown problem kind {self.kind!r}")
        super().__init__(self.detail)

    @property
    def status(self) -> int:
        return KINDS[self.kind][0]

    @property
    def type(self) -> str:
        return TYPE_PREFIX + self.kind

    def as_json(self, instance: str | None = None) -> dict[str, Any]:
        document: dict[str, Any] = {"type": self.type, "title": KINDS[self.kind][1], "status": self.status,
                                    "detail": self.detail}
        if instance is not None:
            document["instance"] = instance
        if self.errors:
            document["errors"] = [error.as_json() for error in self.errors]
        document.update(self.extra)
        return document

    def body(self, instance: str | None = None) -> bytes:
        """The answer's JSON, always encodable: a detail may repeat a value with a lone surrogate
        in it ("timezone 'x\\ud800' …"), which is written as its JSON escape."""
        return json.dumps(self.as_json(instance), ensure_ascii=False).encode("utf-8", "backslashreplace")


def pointer(*parts: str | int) -> str:
    """A JSON pointer (RFC 6901) to a member of the body: pointer("messages", 3, "fire_at")."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


def invalid(detail: str, at: str | None, *, where: str = "pointer") -> Problem:
    """One invalid input; `at` the body's JSON pointer, or a parameter or header name."""
    error = FieldError(detail, **{where: at}) if at is not None else FieldError(detail)
    kind = "invalid-request" if where == "pointer" else "invalid-parameter"
    return Problem(kind, detail, [error])
