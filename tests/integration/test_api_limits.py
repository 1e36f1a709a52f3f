"""Every maxLength reminderd/openapi.yaml declares for a request is enforced: for each bounded query
or path parameter and each bounded member of a JSON body (found by walking the document, so a new
one is tested as soon as it is written), a value one character over the limit is refused with a
problem naming the field, never taken."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from support import ApiClient

from reminderd.api import openapi_document
from reminderd.limits import Bounds, RequestLimits
from reminderd.problems import pointer
from reminderd.testing import Receiver, add_api_key, add_tenant

pytestmark = pytest.mark.shared_database

LIMITS = RequestLimits.from_document(openapi_document())


def leaves(bounds: Bounds, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], int]]:
    if bounds.max_length is not None:
        yield path, bounds.max_length
    for name, inner in bounds.properties.items():
        yield from leaves(inner, (*path, name))
    if bounds.items is not None:
        yield from leaves(bounds.items, (*path, 0))
    if bounds.other_properties is not None:
        yield from leaves(bounds.other_properties, (*path, "any"))


def body_with(path: tuple[str | int, ...], value: str) -> Any:
    """The smallest document with `value` at `path` (an array of one element for an index)."""
    if not path:
        return value
    inner = body_with(path[1:], value)
    return [inner] if isinstance(path[0], int) else {path[0]: inner}


def cases() -> Iterator[tuple[str, str, tuple[str, Any], int]]:
    """(method, path, (where, name or JSON path), maxLength) for every bounded request field."""
    for (method, path), limits in LIMITS.operations().items():
        for name, max_length in limits.parameters.items():
            yield method, path, ("parameter", name), max_length
        if limits.body is not None:
            for at, max_length in leaves(limits.body):
                yield method, path, ("pointer", at), max_length


@pytest.fixture
async def key(db: asyncpg.Connection, receiver: Receiver) -> str:
    await add_tenant(db, "acme", receiver.url)
    await db.execute("UPDATE reminderd.tenants SET api_rate_limit = 100000 WHERE id = 'acme'")
    return await add_api_key(db, "acme", name="limits")


def test_the_document_bounds_what_the_reviewer_found_unbounded() -> None:
    assert len(list(cases())) >= 40
    assert LIMITS.operations()[("POST", "/v1/messages/cancel")].body == Bounds(properties={
        "ref_pattern": Bounds(1000)})
    assert LIMITS.operations()[("GET", "/v1/contacts/{contact_id}/messages")].parameters == {"recent": 64}


async def test_a_value_over_its_max_length_is_refused_naming_the_field(http: ApiClient, key: str) -> None:
    """One server for every case (a case each would start 60 of them); each wrong answer is listed."""
    wrong = [f"{method} {path} {field}: {said}" for method, path, field, max_length in cases()
             if (said := await refusal_missed(http, key, method, path, field, max_length)) is not None]
    assert wrong == []


async def refusal_missed(
    http: ApiClient, key: str, method: str, path: str, field: tuple[str, Any], max_length: int
) -> str | None:
    """None when a value one character over `max_length` at `field` is refused naming it (or, in
    a contacts upload, that contact alone is); otherwise what was answered instead."""
    where, at = field
    over = "0" * max_length + "1"  # digits: a duration, a calendar, a ref; wrong only by its length
    route = path.replace("{id}", "1").replace("{contact_id}", "c1")
    if where == "parameter" and f"{{{at}}}" in path:
        route = path.replace(f"{{{at}}}", over)
    params = {at: over} if where == "parameter" and f"{{{at}}}" not in path else None
    json = body_with(at, over) if where == "pointer" else ({} if method in ("POST", "PUT", "PATCH") else None)
    answer = await http.call(method, route, key, json=json, params=params)
    if over in answer.body.decode():
        return "the value is echoed back"
    if (method, path) == ("PUT", "/v1/contacts"):  # each contact is judged alone: the others are written
        if answer.status != 200 or answer.json["failed"] != 1:
            return f"{answer.status}: {answer.body[:300]!r}"
        said = answer.json["errors"][0]["error"]["detail"]
        expected = f"{at[-1]} is {max_length + 1:,} characters long, more than the {max_length:,} allowed"
        return None if expected in said else said
    if answer.status not in (400, 422):
        return f"{answer.status}: {answer.body[:300]!r}"
    problem = answer.json
    named = {error.get("parameter") for error in problem.get("errors", [])} | {
        error.get("pointer") for error in problem.get("errors", [])}
    expected = at if where == "parameter" else pointer(*at)
    return None if expected in named else f"names {named}, not {expected}: {problem}"
