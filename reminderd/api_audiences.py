"""The HTTP API's routes for recipients (issue 14, docs/audiences.md "For the HTTP API"):
contacts (one by one, a JSON array or an NDJSON stream), a contact's whole picture, audiences,
broadcasts (dry run, approval by another key, progress) and cadences. Registered by api.py.

Handlers know HTTP, not SQL: each checks its input with the rules the CLI uses
(reminderd/validation.py, reminderd/contact_files.py) and makes one Store call (one SQL function).
The database's refusals become problems by SQLSTATE in api._refused. Every write says which key
did it (events.on_behalf_of), and a broadcast's actor, who may not approve it, is that key.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import wire
from .apikeys import Caller
from .arguments import Audience, BroadcastRequest, CadenceRequest
from .contact_files import MAX_LINE, SentContact, checked_contact
from .duration import parse_seconds, signed_interval
from .exceptions import DatabaseRefused
from .limits import too_long
from .problems import FieldError, Problem, invalid, pointer
from .rows import BroadcastProgress, Contact, ContactMessage, StagedOccurrence, ZoneWave
from .schedule import BACKFILL_POLICIES, InvalidSchedule, Waves, readable_zones
from .store import Store
from .validation import (
    API_NAMES,
    HOLIDAY_RULES,
    MAX_DELAY_S,
    InvalidInput,
    Recurrence,
    checked_calendar,
    checked_callback_url,
    checked_category,
    checked_choice,
    checked_contact_id,
    checked_timezone,
    parse_duration,
    parse_instant,
    parse_payload,
    parse_wall_time,
)

if TYPE_CHECKING:
    from .api import Api

Handler = Callable[[web.Request, Caller, Store], Awaitable[web.Response]]

NDJSON = ("application/x-ndjson", "application/jsonl", "application/json-lines")
MAX_CONTACTS_JSON = 10_000  # in one JSON array; more: NDJSON, streamed
CONTACT_BATCH = 5_000  # an NDJSON upload is written in batches of this many, each its own transaction
MAX_IDS = 10_000  # contact ids in one audience change or one broadcast's contact_ids
MAX_ERRORS = 1_000  # per-item errors listed in one answer (the counts count them all)
CHUNK = 64 * 1024  # an NDJSON body is read this much at a time
_AUDIENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")  # as the CLI checks it (arguments.py)
_REF_PREFIX = re.compile(r"[^%#\s\x00]{1,100}")
_OFFSET = re.compile(r"([+-])(.+)")
BROADCAST_FIELDS = frozenset(
    {
        "ref_prefix",
        "local_time",
        "cron",
        "every",
        "rrule",
        "audience",
        "contact_ids",
        "everyone",
        "payload",
        "category",
        "until",
        "callback_url",
        "calendar",
        "holiday_rule",
        "backfill",
        "max_lateness",
        "notify",
        "stage_ahead",
    }
)
CADENCE_FIELDS = frozenset(
    {
        "ref_prefix",
        "anchor",
        "offsets",
        "at_local",
        "contact_id",
        "timezone",
        "payload",
        "callback_url",
        "category",
    }
)


@dataclass(frozen=True)
class RecipientRoute:
    method: str
    path: str
    handler: Handler
    writes: bool = False
    streamed: bool = False  # reads its own body, in pieces, and opens its own transactions


class Recipients:
    """The handlers; `api` lends its body reader and its settings."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def routes(self) -> list[RecipientRoute]:
        return [
            RecipientRoute("PUT", "/v1/contacts", self.upsert_contacts, writes=True, streamed=True),
            RecipientRoute("GET", "/v1/contacts/{contact_id}", self.get_contact),
            RecipientRoute("DELETE", "/v1/contacts/{contact_id}", self.delete_contact, writes=True),
            RecipientRoute("GET", "/v1/contacts/{contact_id}/messages", self.contact_messages),
            RecipientRoute("GET", "/v1/audiences", self.list_audiences),
            RecipientRoute("DELETE", "/v1/audiences/{audience}", self.drop_audience, writes=True),
            RecipientRoute("PUT", "/v1/audiences/{audience}/members", self.add_members, writes=True),
            RecipientRoute("DELETE", "/v1/audiences/{audience}/members", self.remove_members, writes=True),
            RecipientRoute("POST", "/v1/broadcasts", self.create_broadcast, writes=True),
            RecipientRoute("GET", "/v1/broadcasts", self.list_broadcasts),
            RecipientRoute("GET", "/v1/broadcasts/{id}", self.get_broadcast),
            RecipientRoute("POST", "/v1/broadcasts/{id}/approve", self.approve_broadcast, writes=True),
            RecipientRoute("POST", "/v1/broadcasts/{id}/reject", self.reject_broadcast, writes=True),
            RecipientRoute("POST", "/v1/broadcasts/{id}/cancel", self.cancel_broadcast, writes=True),
            RecipientRoute("POST", "/v1/cadences", self.schedule_cadence, writes=True),
        ]

    # Contacts -----------------------------------------------------------------------------------

    async def upsert_contacts(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        """A JSON array of contacts (or one object), or NDJSON (one a line) streamed in batches.
        Invalid items are reported by index (JSON) or line (NDJSON) and the rest written."""
        tenant = _tenant(caller)
        upload = Upload(MAX_ERRORS)
        if request.content_type in NDJSON:
            # With an Idempotency-Key the body was read whole (its answer is kept with it), and
            # the request is one transaction; otherwise it is read line by line.
            read = (
                _one_chunk(await request.read())
                if store.in_transaction
                else request.content.iter_chunked(CHUNK)
            )
            written_through = 0  # the last line of the batches written
            async for batch in _ndjson_batches(read, upload, self.api.settings.api_max_json_depth):
                # A long upload outlives the check its request had: each batch asks again.
                if not await self.api.still_authorized(request, caller):
                    raise _revoked_during_upload(0 if store.in_transaction else written_through)
                last = batch[-1].line  # (_write_contacts takes out what the database refuses)
                await self._write_contacts(store, caller, tenant, batch, upload, by="line")
                written_through = last
        else:
            document = await self.api.read_json(request, shapes=(list, dict), alone="")
            items = document if isinstance(document, list) else [document]
            if not items:
                raise invalid("send at least one contact", None)
            if len(items) > MAX_CONTACTS_JSON:
                raise invalid(
                    f"at most {MAX_CONTACTS_JSON:,} contacts in one JSON array (got {len(items):,}); "
                    "send more as NDJSON (Content-Type: application/x-ndjson), one a line",
                    None,
                )
            batch = []
            look = wire.may_hold_unstorable(await request.read())  # read_json left these to each contact
            bounds = self.api.limits.element_bounds("PUT", "/v1/contacts", (0,))  # and these (openapi.yaml)
            for index, item in enumerate(items):
                upload.received += 1
                if (long := next(too_long(bounds, item, ()), None)) is not None:
                    upload.refuse(index, _id_of(item), long.detail())
                    continue
                line = _accepted(index, item, upload, look=look)
                if line is not None:
                    batch.append(line)
            await self._write_contacts(store, caller, tenant, batch, upload, by="index")
        return _json(upload.answer(by="line" if request.content_type in NDJSON else "index"))

    async def _write_contacts(
        self, store: Store, caller: Caller, tenant: str, batch: list[SentContact], upload: Upload, *, by: str
    ) -> None:
        """One batch in one transaction; an element the database refuses (it names it) is
        reported and the rest written again."""
        while batch:
            contacts = [line.contact for line in batch]
            ids = list(dict.fromkeys(str(contact["contact_id"]) for contact in contacts if contact))
            try:
                async with store.transaction() as tx:
                    await tx.act_for(caller.acting_for)
                    # A savepoint: inside the request's transaction (an Idempotency-Key's), a
                    # refused batch must not abort it, since it is written again without the refused.
                    async with tx.savepoint():
                        written, existed = await tx.upsert_contacts_counted(tenant, _array(contacts), ids)
            except DatabaseRefused as exc:
                position = _element(exc, batch)
                if position is None:
                    raise
                refused = batch.pop(position)
                assert refused.contact is not None
                upload.refuse(refused.line, refused.contact["contact_id"], _said(exc), exc.sqlstate)
                continue
            new = len(ids) - existed
            upload.new += new
            upload.changed += written - new
            upload.unchanged += len(ids) - written
            upload.repeated += len(batch) - len(ids)
            return

    async def get_contact(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        tenant, contact_id = _tenant(caller), _contact_id(request)
        contact = await store.contact(tenant, contact_id)
        if contact is None:
            raise _no_contact(contact_id)
        return _json(_contact_json(contact))

    async def delete_contact(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        tenant, contact_id = _tenant(caller), _contact_id(request)
        return _json({"deleted": await store.delete_contacts(tenant, [contact_id])})

    async def contact_messages(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        """The contact's whole picture: the contact, its live messages soonest first, then those
        ended within `recent`, with the reason for anything held."""
        tenant, contact_id = _tenant(caller), _contact_id(request)
        recent = request.query.get("recent", "7d")
        limit_text = request.query.get("limit", "100")
        try:
            recent_s = parse_duration(recent, "recent", allow_zero=True).total_seconds()
        except InvalidInput as exc:
            raise invalid(str(exc), "recent", where="parameter") from None
        if not limit_text.isascii() or not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
            raise invalid("limit must be an integer from 1 to 1000", "limit", where="parameter")
        contact = await store.contact(tenant, contact_id)
        if contact is None:
            raise _no_contact(contact_id)
        messages = await store.contact_messages(tenant, contact_id, recent_s=recent_s, limit=int(limit_text))
        return _json(
            {"contact": _contact_json(contact), "messages": [_contact_message_json(m) for m in messages]}
        )

    # Audiences ----------------------------------------------------------------------------------

    async def list_audiences(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        found = await store.audiences(_tenant(caller))
        return _json(
            {"audiences": [{"name": a.name, "members": a.members, "created_at": a.created_at} for a in found]}
        )

    async def add_members(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        audience, ids = _audience(request), await self._contact_ids(request)
        return _json(
            {"audience": audience, "added": await store.add_to_audience(_tenant(caller), audience, ids)}
        )

    async def remove_members(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        audience, ids = _audience(request), await self._contact_ids(request)
        removed = await store.remove_from_audience(_tenant(caller), audience, ids)
        return _json({"audience": audience, "removed": removed})

    async def drop_audience(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        audience = _audience(request)
        return _json({"audience": audience, "dropped": await store.drop_audience(_tenant(caller), audience)})

    async def _contact_ids(self, request: web.Request) -> list[str]:
        body = await self.api.read_json(request)
        _no_unknown(body, {"contact_ids"})
        return _ids(body.get("contact_ids"), "contact_ids", required=True)

    # Broadcasts ---------------------------------------------------------------------------------

    async def create_broadcast(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        """Save (and for a one-off, stage) a broadcast, its actor the key; ?dry_run=true: what it
        would send, nothing staged."""
        dry_run = request.query.get("dry_run", "false")
        if dry_run not in ("true", "false"):
            raise invalid("dry_run must be true or false", "dry_run", where="parameter")
        now = datetime.now(UTC)
        broadcast = _broadcast_request(_tenant(caller), await self.api.read_json(request), caller, now)
        if dry_run == "true":  # the real call, rolled back: refused as it would be, or the preview
            approval = await store.broadcast_dry_run(broadcast)
            return _json({**await _preview(store, broadcast, now), "approval": approval})
        broadcast_id = await store.broadcast(broadcast)
        return _json(await _broadcast_now(store, broadcast.tenant_id, broadcast_id), 201)

    async def list_broadcasts(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        return _json({"broadcasts": [_broadcast_json(b) for b in await store.broadcasts(_tenant(caller))]})

    async def get_broadcast(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        return _json(await _broadcast_now(store, _tenant(caller), _broadcast_id(request)))

    async def approve_broadcast(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        return await self._decide(request, caller, store, approve=True)

    async def reject_broadcast(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        return await self._decide(request, caller, store, approve=False)

    async def _decide(
        self, request: web.Request, caller: Caller, store: Store, *, approve: bool
    ) -> web.Response:
        tenant, broadcast_id = _tenant(caller), _broadcast_id(request)
        body = await self.api.read_json(request, required=False)
        _no_unknown(body, {"note"})
        note = body.get("note")
        if note is not None and (not isinstance(note, str) or len(note) > 1000 or "\x00" in note):
            raise invalid("note must be a string of at most 1,000 characters", pointer("note"))
        decide = store.approve_broadcast if approve else store.reject_broadcast
        changed = await decide(tenant, broadcast_id, actor=caller.acting_for, note=note)
        document = await _broadcast_now(store, tenant, broadcast_id)
        document["released" if approve else "cancelled_messages"] = changed
        return _json(document)

    async def cancel_broadcast(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        tenant, broadcast_id = _tenant(caller), _broadcast_id(request)
        cancelled = await store.cancel_broadcast(tenant, broadcast_id)
        document = await _broadcast_now(store, tenant, broadcast_id)
        document["cancelled_messages"] = cancelled
        return _json(document)

    # Cadences -----------------------------------------------------------------------------------

    async def schedule_cadence(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        cadence = _cadence_request(_tenant(caller), await self.api.read_json(request))
        steps = await store.schedule_cadence(cadence)
        return _json(
            {
                "ref_prefix": cadence.ref_prefix,
                "steps": [
                    {
                        "ref_id": s.ref_id,
                        "id": s.message_id,
                        "fire_at": s.fire_at,
                        "local_time": _wall(s.local_time),
                        "skipped": s.skipped,
                        "outcome": s.outcome,
                        "cancelled_id": s.cancelled_id,
                    }
                    for s in steps
                ],
            },
            201,
        )


# An upload's tally -------------------------------------------------------------------------------


class Upload:
    def __init__(self, max_errors: int) -> None:
        self.received = self.new = self.changed = self.unchanged = self.repeated = self.failed = 0
        self.errors: list[dict[str, Any]] = []
        self.max_errors = max_errors

    def refuse(self, at: int, contact_id: str | None, detail: str, sqlstate: str | None = None) -> None:
        self.failed += 1
        if len(self.errors) < self.max_errors:
            self.errors.append({"at": at, "contact_id": contact_id, "detail": detail, "sqlstate": sqlstate})

    def answer(self, *, by: str) -> dict[str, Any]:
        where = "line" if by == "line" else "index"
        errors = []
        for error in self.errors:
            problem = Problem(
                "database-refused" if error["sqlstate"] else "invalid-request",
                f"{where} {error['at']}: {error['detail']}",
                [FieldError(error["detail"], pointer=None if by == "line" else pointer(error["at"]))],
                extra={"sqlstate": error["sqlstate"]} if error["sqlstate"] else {},
            )
            errors.append(
                {
                    where: error["at"],
                    "result": "error",
                    "contact_id": error["contact_id"],
                    "error": problem.as_json(),
                }
            )
        return {
            "received": self.received,
            "new": self.new,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "repeated": self.repeated,
            "failed": self.failed,
            "errors": errors,
            "errors_truncated": self.failed > len(errors),
        }


async def _one_chunk(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The lines of a body read in chunks (without their newline), never more than MAX_LINE + 1
    bytes of one held: a longer line is handed out cut there (so that it is refused as too long)
    and the rest of it dropped."""
    pending = bytearray()
    skipping = False  # in the rest of a line too long
    async for chunk in chunks:
        *complete, rest = chunk.split(b"\n")
        for part in complete:
            if skipping:  # the end of the long line
                skipping = False
                pending.clear()
                continue
            pending += part
            yield bytes(pending)
            pending.clear()
        if skipping:
            continue
        pending += rest
        if len(pending) > MAX_LINE:
            yield bytes(pending[: MAX_LINE + 1])
            pending.clear()
            skipping = True
    if pending and not skipping:
        yield bytes(pending)


async def _ndjson_batches(
    chunks: AsyncIterator[bytes], upload: Upload, max_depth: int
) -> AsyncIterator[list[SentContact]]:
    """The body's lines, each checked, in batches of CONTACT_BATCH; never the whole body in memory.
    A bad line is reported by its number (from 1) and skipped; one nesting arrays and objects more
    than `max_depth` deep is bad (REMINDERD_API_MAX_JSON_DEPTH, as for a JSON body)."""
    batch: list[SentContact] = []
    number = 0
    async for raw in _lines(chunks):
        number += 1
        if len(raw) > MAX_LINE:
            upload.received += 1
            upload.refuse(number, None, f"longer than {MAX_LINE // 1024} KiB")
            continue
        if not raw.strip():
            continue
        upload.received += 1
        try:
            item = wire.parse(raw)
        except wire.NotJSON as exc:
            upload.refuse(number, None, f"not JSON: {exc}")
            continue
        if wire.too_deep(raw, item, max_depth):
            upload.refuse(
                number,
                None,
                f"nests arrays and objects more than {max_depth} levels deep (REMINDERD_API_MAX_JSON_DEPTH)",
            )
            continue
        line = _accepted(number, item, upload, look=wire.may_hold_unstorable(raw))
        if line is None:
            continue
        batch.append(line)
        if len(batch) >= CONTACT_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _accepted(at: int, item: Any, upload: Upload, *, look: bool) -> SentContact | None:
    """The contact at `at`, checked as a contacts file's line is and as PostgreSQL will take it
    (its numbers kept as written; `look`: for a string it cannot store, as the text it was parsed
    from may hold one); None, and the reason recorded, when it is refused."""
    for found in wire.unstorable(item) if look else ():
        upload.refuse(at, _id_of(item), found.detail("the contact"))
        return None
    line = checked_contact(at, item)
    if line.contact is None:
        upload.refuse(at, _id_of(item), line.problem or "invalid")
        return None
    text, encoded = wire.encode(line.contact)
    try:
        parse_payload(text, "contact", encoded=encoded)
    except InvalidInput as exc:
        upload.refuse(at, _id_of(item), str(exc))
        return None
    return line


def _array(contacts: list[dict[str, Any] | None]) -> str:
    """The batch as the JSON array upsert_contacts takes, numbers as the client wrote them."""
    return "[" + ", ".join(wire.text_of(contact) for contact in contacts) + "]"


def _element(exc: DatabaseRefused, batch: list[SentContact]) -> int | None:
    """Which element of the batch (from 0) upsert_contacts refused: the one its error names."""
    number = exc.batch_element
    return number - 1 if number is not None and number <= len(batch) else None


def _said(exc: DatabaseRefused) -> str:
    """The refusal without the batch's numbering (which the answer says as index or line)."""
    return f"contact {exc.element_said}" + (f" ({exc.hint})" if exc.hint else "")


def _id_of(item: Any) -> str | None:
    """A refused item's contact_id, to repeat in the answer: None when it has none the answer can hold."""
    value = item.get("contact_id") if isinstance(item, dict) else None
    return value if isinstance(value, str) and wire.storable(value) else None


# Reading requests ----------------------------------------------------------------------------------


def _tenant(caller: Caller) -> str:
    assert caller.tenant_id is not None  # operator keys are refused before any handler
    return caller.tenant_id


def _contact_id(request: web.Request) -> str:
    text = request.match_info["contact_id"]
    try:
        return checked_contact_id(text, "contact_id")
    except InvalidInput as exc:
        raise invalid(str(exc), "contact_id", where="parameter") from None


def _audience(request: web.Request) -> str:
    name = request.match_info["audience"]
    if not _AUDIENCE.fullmatch(name):
        raise invalid(
            "audience: letters, digits and _ . : -, starting with a letter or digit, at most 128",
            "audience",
            where="parameter",
        )
    return name


def _broadcast_id(request: web.Request) -> int:
    value = int(request.match_info["id"])
    if not 0 < value < 2**63:
        raise Problem("not-found", f"no broadcast {value}")
    return value


def _revoked_during_upload(written_through: int) -> Problem:
    """The key was revoked (or lost its write scope) while an NDJSON upload ran: a 401 saying
    what stays written (the batches before, each its own transaction; with an Idempotency-Key
    the upload is one, rolled back)."""
    kept = (f"what it sent up to line {written_through:,} was written, nothing after" if written_through
            else "nothing was written")
    return Problem(
        "unauthorized",
        f"the API key was revoked (or made read-only) during the upload: {kept}",
        extra={"written_through_line": written_through},
        headers={"WWW-Authenticate": 'Bearer realm="reminderd", error="invalid_token"'},
    )


def _no_contact(contact_id: str) -> Problem:
    return Problem("not-found", f"no contact {contact_id!r}")


def _no_unknown(body: dict[str, Any], known: set[str] | frozenset[str]) -> None:
    unknown = sorted(set(body) - known)
    if unknown:
        raise invalid(f"unknown field {unknown[0]!r}", pointer(unknown[0]))


def _ids(value: Any, field: str, *, required: bool) -> list[str]:
    if value is None and not required:
        return []
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise invalid(f"{field} must be a list of 1 to {MAX_IDS:,} contact ids", pointer(field))
    if len(value) > MAX_IDS:
        raise invalid(f"at most {MAX_IDS:,} contact ids at once (got {len(value):,})", pointer(field))
    for index, text in enumerate(value):
        try:
            checked_contact_id(text, f"{field}[{index}]")
        except InvalidInput as exc:
            raise invalid(str(exc), pointer(field, index)) from None
    return list(dict.fromkeys(value))


def _text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string", name)
    return value


def _duration_s(body: dict[str, Any], name: str, *, allow_zero: bool) -> float | None:
    text = wire.duration(body.get(name), name, allow_zero=allow_zero)
    return None if text is None else parse_duration(text, name, allow_zero=allow_zero).total_seconds()


def _broadcast_request(tenant: str, body: dict[str, Any], caller: Caller, now: datetime) -> BroadcastRequest:
    _no_unknown(body, BROADCAST_FIELDS)
    try:
        prefix = _text(body, "ref_prefix")
        if prefix is None or not _REF_PREFIX.fullmatch(prefix):
            raise InvalidInput(
                "ref_prefix is required: 1 to 100 characters without spaces, % or # "
                "(the messages' refs are ref_prefix:contact_id)",
                "ref_prefix",
            )
        audience = _audience_of(body)
        for name in ("cron", "every", "rrule", "local_time", "until"):
            _text(body, name)
        recurrence = Recurrence.parse(
            cron=body.get("cron"),
            every=body.get("every"),
            rrule=body.get("rrule"),
            timezone="UTC",
            start=now,
            names=API_NAMES,
            until_as_instant=True,
        )
        local_time = (
            None if body.get("local_time") is None else parse_wall_time(body["local_time"], "local_time")
        )
        if (local_time is None) == (recurrence is None):
            raise InvalidInput(
                "say when: local_time (a wall time, read in each contact's zone) for one wave, "
                "or cron, every or rrule for a recurring one",
                "local_time" if local_time is not None else "cron",
            )
        if body.get("until") is not None and recurrence is None:
            raise InvalidInput("until ends a recurring broadcast: use it with cron, every or rrule", "until")
        category = _text(body, "category") or "marketing"
        checked_category(category, "category")
        for name in ("notify",):
            if body.get(name) is not None and not isinstance(body[name], bool):
                raise InvalidInput(f"{name} must be true or false", name)
        payload = None if "payload" not in body else wire.encode(body["payload"])
        return BroadcastRequest(
            tenant_id=tenant,
            ref_prefix=prefix,
            audience=audience,
            payload_json="{}" if payload is None else parse_payload(payload[0], "payload", encoded=payload[1]),
            category=category,
            local_time=local_time,
            recurrence=recurrence,
            until=None
            if body.get("until") is None
            else parse_instant(body["until"], "UTC", "until", names=API_NAMES),
            callback_url=checked_callback_url(_text(body, "callback_url"), "callback_url"),
            calendar=checked_calendar(_text(body, "calendar"), "calendar"),
            holiday_rule=checked_choice(_text(body, "holiday_rule"), HOLIDAY_RULES, "holiday_rule"),
            backfill=checked_choice(_text(body, "backfill"), BACKFILL_POLICIES, "backfill"),
            max_lateness_s=_duration_s(body, "max_lateness", allow_zero=True),
            notify=bool(body.get("notify", False)),
            stage_ahead_s=_duration_s(body, "stage_ahead", allow_zero=False),
            actor=caller.acting_for,
        )
    except InvalidInput as exc:
        raise invalid(str(exc), pointer(*exc.field.split("/")) if exc.field else None) from None


def _audience_of(body: dict[str, Any]) -> Audience:
    given = [name for name in ("audience", "contact_ids", "everyone") if body.get(name) not in (None, False)]
    if len(given) != 1:
        raise InvalidInput(
            "say whom it reaches: exactly one of audience (a list's name), contact_ids and everyone: true",
            given[1] if len(given) > 1 else "audience",
        )
    if given[0] == "audience":
        name = body["audience"]
        if not isinstance(name, str) or not _AUDIENCE.fullmatch(name):
            raise InvalidInput(
                "audience: letters, digits and _ . : -, starting with a letter or digit, at most 128",
                "audience",
            )
        return Audience(name=name)
    if given[0] == "contact_ids":
        return Audience(contact_ids=_ids(body["contact_ids"], "contact_ids", required=True))
    if body["everyone"] is not True:
        raise InvalidInput("everyone must be true or false", "everyone")
    return Audience(everyone=True)


def _cadence_request(tenant: str, body: dict[str, Any]) -> CadenceRequest:
    _no_unknown(body, CADENCE_FIELDS)
    try:
        prefix = _text(body, "ref_prefix")
        if prefix is None or not _REF_PREFIX.fullmatch(prefix):
            raise InvalidInput(
                "ref_prefix is required: 1 to 100 characters without spaces, % or # "
                "(the messages' refs are ref_prefix:-30d, …)",
                "ref_prefix",
            )
        contact, zone = _text(body, "contact_id"), _text(body, "timezone")
        if (contact is None) == (zone is None):
            raise InvalidInput(
                "say whose clock: exactly one of contact_id and timezone",
                "timezone" if contact is not None else "contact_id",
            )
        contact_id = None if contact is None else checked_contact_id(contact, "contact_id")
        timezone = None if zone is None else checked_timezone(zone, "timezone")
        anchor_text = _text(body, "anchor")
        if anchor_text is None:
            raise InvalidInput(
                "anchor is required: the instant the offsets are counted from, e.g. 2027-03-01T00:00:00Z",
                "anchor",
            )
        if timezone is None:
            anchor = parse_instant(anchor_text, None, "anchor", names=API_NAMES)
        else:
            anchor = parse_instant(anchor_text, timezone, "anchor", names=API_NAMES)
        offsets_given = body.get("offsets", ["-30d", "-7d", "-1d"])
        if (
            not isinstance(offsets_given, list)
            or not 1 <= len(offsets_given) <= 100
            or not all(isinstance(o, str) for o in offsets_given)
        ):
            raise InvalidInput(
                'offsets must be a list of 1 to 100 signed durations, e.g. ["-30d", "-7d", "-1d"]', "offsets"
            )
        offsets = [_interval(text, index) for index, text in enumerate(offsets_given)]
        at_text = _text(body, "at_local")
        at_local = None
        if at_text is not None:
            try:
                at_local = time.fromisoformat(at_text)
            except ValueError:
                raise InvalidInput(f"at_local {at_text!r}: a time of day such as 10:00", "at_local") from None
            if at_local.tzinfo is not None:
                raise InvalidInput(f"at_local {at_text!r}: a wall time, without a UTC offset", "at_local")
        category = _text(body, "category") or "transactional"
        checked_category(category, "category")
        payload = None if "payload" not in body else wire.encode(body["payload"])
        return CadenceRequest(
            tenant,
            prefix,
            anchor,
            offsets,
            at_local,
            contact_id,
            timezone,
            "{}" if payload is None else parse_payload(payload[0], "payload", encoded=payload[1]),
            checked_callback_url(_text(body, "callback_url"), "callback_url"),
            category,
        )
    except InvalidInput as exc:
        raise invalid(str(exc), pointer(*exc.field.split("/")) if exc.field else None) from None


def _interval(text: str, index: int) -> str:
    """A signed duration ("-30d", "+1d12h") as a PostgreSQL interval whose parts share its sign,
    so days stay calendar days (as the CLI writes it: arguments.interval_text). A refusal names
    the offset as written, at its pointer (/offsets/3)."""
    field = f"offsets/{index}"
    said = f"offsets[{index}] {text!r}"
    match = _OFFSET.fullmatch(text.strip())
    if match is None:
        raise InvalidInput(f"{said}: a signed duration, - for before (-30d), + for after (+1d)", field)
    try:
        seconds = parse_seconds(match.group(2))
    except ValueError as exc:
        raise InvalidInput(f"{said}: {exc}", field) from None
    if seconds < 0:
        raise InvalidInput(f"{said}: one sign, - for before (-30d) or + for after (+1d)", field)
    if not seconds < MAX_DELAY_S:
        raise InvalidInput(f"{said}: an offset is under 100 years before or after", field)
    try:
        return signed_interval(-seconds if match.group(1) == "-" else seconds)
    except ValueError:
        raise InvalidInput(f"{said}: an offset is a whole number of seconds (its step's ref names it)",
                           field) from None


# Answers -----------------------------------------------------------------------------------------------


def _json(document: Any, status: int = 200) -> web.Response:
    return web.Response(body=wire.dumps(document), status=status, content_type="application/json")


def _wall(value: datetime | None) -> str | None:
    """A wall time (naive: on someone's clock), as ISO 8601 without an offset."""
    return None if value is None else value.isoformat(timespec="seconds")


def _contact_json(contact: Contact) -> dict[str, Any]:
    return {
        "contact_id": contact.contact_id,
        "timezone": contact.timezone,
        "phone": contact.phone,
        "country": contact.country,
        "attributes": contact.attributes,
        "zone": contact.zone,
        "zone_source": contact.zone_source,
        "audiences": list(contact.audiences),
        "created_at": contact.created_at,
        "updated_at": contact.updated_at,
    }


def _contact_message_json(message: ContactMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "ref_id": message.ref_id,
        "status": message.status,
        "fire_at": message.fire_at,
        "local_fire_at": _wall(message.local_fire_at),
        "timezone": message.timezone,
        "timezone_source": message.timezone_source,
        "recurrence": message.recurrence,
        "category": message.category,
        "broadcast_id": message.broadcast_id,
        "last_event": message.last_event,
        "reason": message.reason,
        "updated_at": message.updated_at,
    }


def _state(b: BroadcastProgress) -> str:
    if b.done:
        return "done"
    if b.approval == "awaiting":
        return "awaiting_approval"
    if b.approval == "rejected":
        return "rejected"
    return "sending" if b.ended_at is not None else "recurring"


def _broadcast_json(b: BroadcastProgress) -> dict[str, Any]:
    return {
        "id": b.id,
        "ref_prefix": b.ref_prefix,
        "audience": b.audience,
        "local_time": _wall(b.local_time),
        "cron": b.cron,
        "rrule": b.rrule,
        "category": b.category,
        "approval": b.approval,
        "created_by": b.created_by,
        "created_at": b.created_at,
        "decided_by": b.decided_by,
        "decided_at": b.decided_at,
        "occurrences": b.occurrences,
        "counts": {
            "staged": b.staged,
            "waiting": b.waiting,
            "held": b.held,
            "sent": b.sent,
            "failed": b.failed,
            "expired": b.expired,
            "cancelled": b.cancelled,
        },
        "done": b.done,
        "state": _state(b),
        "next_occurrence": _wall(b.next_occurrence),
        "ended_at": b.ended_at,
        "ended_reason": b.ended_reason,
        "last_error": b.last_error,
    }


def _wave_json(w: StagedOccurrence) -> dict[str, Any]:
    return {
        "occurrence": _wall(w.occurrence),
        "contacts": w.contacts,
        "first_fire_at": w.first_fire_at,
        "last_fire_at": w.last_fire_at,
        "staged_at": w.staged_at,
        "completed_at": w.completed_at,
    }


async def _broadcast_now(store: Store, tenant: str, broadcast_id: int) -> dict[str, Any]:
    found = await store.broadcasts(tenant, broadcast_id)
    if not found:
        raise Problem("not-found", f"no broadcast {broadcast_id}")
    document = _broadcast_json(found[0])
    document["waves"] = [_wave_json(w) for w in await store.broadcast_occurrences(broadcast_id)]
    return document


async def _preview(store: Store, broadcast: BroadcastRequest, now: datetime) -> dict[str, Any]:
    """The dry run: the audience's size, its sends per UTC hour and its zones with their sources,
    for a one-off's wave or a recurring broadcast's first occurrence; nothing is staged. Contacts
    the wave would not be sent are counted apart: without a zone, in a zone this database server
    cannot read (staged dead), and, for a recurring one, those whose instant of it is after its until."""
    local_time, following, until = broadcast.local_time, None, None
    if local_time is None:
        recurrence = broadcast.recurrence
        assert recurrence is not None
        zones, _ = readable_zones([
            w.timezone
            for w in await store.broadcast_preview(broadcast, now.replace(tzinfo=None))
            if w.timezone is not None
        ])  # as the stager plans: over the zones the daemon can read
        try:
            recurring = Waves.parse(
                cron=recurrence.cron, rrule=recurrence.rrule, until=broadcast.until, start=now
            )
        except InvalidSchedule as exc:
            raise invalid(str(exc), pointer(recurrence.field(API_NAMES))) from None
        local_time = recurring.first(zones, now)
        if local_time is None:
            raise invalid("the recurrence has no occurrence ahead", pointer(recurrence.field(API_NAMES)))
        following = recurring.after(local_time, zones)
        until = recurring.until
    waves = await store.broadcast_preview(broadcast, local_time)
    placed = [w for w in waves if w.timezone is not None and w.fire_at is not None]
    zoned = [w for w in placed if until is None or (w.fire_at is not None and w.fire_at <= until)]  # as staged
    per_hour: dict[datetime, int] = {}
    for wave in zoned:
        assert wave.fire_at is not None
        hour = wave.fire_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        per_hour[hour] = per_hour.get(hour, 0) + wave.contacts
    total = sum(w.contacts for w in waves)
    return {
        "dry_run": True,
        "ref_prefix": broadcast.ref_prefix,
        "local_time": _wall(local_time),
        "next_local_time": _wall(following),
        "audience_size": total,
        "without_timezone": sum(w.contacts for w in waves if w.timezone is None),
        "unreadable_timezone": sum(w.contacts for w in waves if w.timezone is not None and w.fire_at is None),
        "after_until": sum(w.contacts for w in placed) - sum(w.contacts for w in zoned),
        "sends_per_utc_hour": [{"hour": hour, "messages": count} for hour, count in sorted(per_hour.items())],
        "zones": [_zone_json(w, now) for w in zoned],
    }


def _zone_json(w: ZoneWave, now: datetime) -> dict[str, Any]:
    return {
        "timezone": w.timezone,
        "fire_at": w.fire_at,
        "contacts": w.contacts,
        "sources": {
            "contact": w.from_contact,
            "phone": w.from_phone,
            "country": w.from_country,
            "tenant": w.from_tenant,
        },
        "in_the_past": w.fire_at is not None and w.fire_at <= now,
    }


__all__ = ["RecipientRoute", "Recipients"]
