"""The command line for recipients (docs/audiences.md): `contacts import|remove`, `contact show`,
`audience add|remove|drop|list`, `broadcast` (with `--dry-run`), `broadcasts
list|show|approve|reject|cancel` and `cadence`. Registered by reminderd/cli.py; each handler
gets a Store and a request checked before any connection (reminderd/arguments.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import refusals
from .exceptions import DatabaseRefused, RoleRefused
from .exceptions import InvalidInput as UsageError  # arguments.UsageError, without importing arguments
from .options import add_recurrence_options
from .schedule import BACKFILL_POLICIES, InvalidSchedule, Waves, readable_zones

if TYPE_CHECKING:  # the requests: imported when a command runs (cli.DatabaseCommand), not by the parser
    from .arguments import (
        AudienceChange,
        BroadcastDecision,
        BroadcastRef,
        BroadcastRequest,
        CadenceRequest,
        ContactShowRequest,
        ContactsImportRequest,
        ContactsRemoveRequest,
        TenantOnly,
    )
    from .contact_files import Line
    from .rows import BroadcastProgress, CadenceStep, Contact, ContactMessage, ZoneWave
    from .store import Store

# cli.py's parser class, whose error() exits with EX_USAGE; as an ArgumentParser here, so that this
# module (below the command line) never imports it (tests/unit/test_boundaries.py).
Parser = argparse.ArgumentParser
AddCommand = Callable[..., Parser]
IMPORT_WORKERS = 2  # connections upserting at once: the database resolves zones, on both cores
YIELD_EVERY = 256  # lines read between turns of the event loop: a few ms at most
PROGRESS_EVERY_S = 0.25


def register(commands: Any, database: Sequence[Parser], add_command: AddCommand,
             database_command: Callable[..., Any]) -> None:
    """Add the recipients' subcommands to `commands` (the top-level subparsers)."""
    contacts = add_command(commands, "contacts", "a tenant's contacts: import, remove", None)
    contacts_commands = contacts.add_subparsers(dest="contacts_command", required=True,
                                                parser_class=type(contacts))
    importing = add_command(
        contacts_commands, "import",
            "add or update contacts from a .csv or .jsonl file, streaming",
        database_command("ContactsImportRequest", import_contacts),
        parents=database,
    )
    importing.add_argument("tenant_id", metavar="TENANT")
    importing.add_argument("file", metavar="FILE")
    importing.add_argument("--format", choices=("csv", "jsonl"), help="when FILE's name does not say (stdin)")
    importing.add_argument("--batch-size", type=int, default=5000, help="contacts per statement (default 5000)")
    importing.add_argument("--skip-invalid", action="store_true",
                           help="import the rest and list the bad lines, instead of stopping at the first")
    removing = add_command(contacts_commands, "remove", "delete contacts; their pending messages are cancelled",
                           database_command("ContactsRemoveRequest", remove_contacts), parents=database)
    removing.add_argument("tenant_id", metavar="TENANT")
    removing.add_argument("contact_ids", metavar="CONTACT", nargs="*")
    removing.add_argument("--file", help="contact ids, one a line (- for stdin)")

    contact = add_command(commands, "contact", "one contact: show", None)
    contact_commands = contact.add_subparsers(dest="contact_command", required=True, parser_class=type(contact))
    show = add_command(contact_commands, "show",
                       "a contact, its zone and why, and its pending and recent messages",
                       database_command("ContactShowRequest", show_contact), parents=database)
    show.add_argument("tenant_id", metavar="TENANT")
    show.add_argument("contact_id", metavar="CONTACT")
    show.add_argument("--recent", default="7d", help="ended messages this far back (default 7d)")
    show.add_argument("--json", action="store_true", help="one JSON object: the contact and its messages")

    audience = add_command(commands, "audience", "named lists of contacts: add, remove, drop, list", None)
    audience_commands = audience.add_subparsers(dest="audience_command", required=True,
                                                parser_class=type(audience))
    for action, summary in (("add", "add contacts to a list (created on first use)"),
                            ("remove", "take contacts off a list"), ("drop",
                                                                     "delete a list (not its contacts)")):
        change = add_command(audience_commands, action, summary,
                             database_command("AudienceChange", change_audience), parents=database)
        change.set_defaults(action=action)
        change.add_argument("tenant_id", metavar="TENANT")
        change.add_argument("audience", metavar="AUDIENCE")
        if action != "drop":
            change.add_argument("contact_ids", metavar="CONTACT", nargs="*")
            change.add_argument("--file", help="contact ids, one a line (- for stdin)")
    listing = add_command(audience_commands, "list", "a tenant's lists and their sizes",
                          database_command("TenantOnly", list_audiences), parents=database)
    listing.add_argument("tenant_id", metavar="TENANT")

    broadcast = add_command(
        commands, "broadcast",
        "message every contact at a wall time in its own zone; prints the id",
        database_command(_broadcast_request, save_broadcast), parents=database,
    )
    broadcast.add_argument("tenant_id", metavar="TENANT")
    broadcast.add_argument("ref_prefix", metavar="PREFIX",
                           help="refs are PREFIX:CONTACT (cancel_matching PREFIX:%%)")
    when = broadcast.add_mutually_exclusive_group(required=True)
    when.add_argument("--at", help="a wall time, read in each contact's zone: 2026-11-27T09:00")
    add_recurrence_options(when)
    whom = broadcast.add_mutually_exclusive_group(required=True)
    whom.add_argument("--audience", metavar="NAME", help="a named list (reminderd audience add)")
    whom.add_argument("--contacts", metavar="ID,…", help="these contacts")
    whom.add_argument("--everyone", action="store_true", help="every contact of the tenant")
    broadcast.add_argument("--payload", metavar="JSON",
                           help="JSON payload of every message; @FILE, - for stdin")
    broadcast.add_argument("--category", default="marketing",
                           help="marketing (default: held by quiet hours) or e.g. transactional")
    broadcast.add_argument("--until", help="recurring: no contact is sent an occurrence whose instant in "
                           "their own zone is after this (ISO-8601)")
    broadcast.add_argument("--callback-url", help="override the tenant's callback URL")
    broadcast.add_argument("--calendar", help="holiday calendar, e.g. IN, GB, US-CA (default: the tenant's)")
    broadcast.add_argument("--holiday-rule", choices=("skip", "send"),
                           help="on a holiday (default: the tenant's)")
    broadcast.add_argument("--backfill", choices=BACKFILL_POLICIES,
                           help="after an outage (default: the daemon's)")
    broadcast.add_argument("--max-lateness", help="how late a message may still go, e.g. 30m")
    broadcast.add_argument("--notify", action="store_true",
                           help="a signed broadcast.completed callback once every message has ended")
    broadcast.add_argument("--stage-ahead", help="recurring: stage each wave this long before its first zone "
                                                 "(default 1h)")
    broadcast.add_argument("--as", dest="actor", metavar="NAME",
                           help="who is acting (default: the database role); approval needs another person")
    broadcast.add_argument("--dry-run", action="store_true",
                           help="print the audience size and the sends per UTC hour; stage nothing")

    broadcasts = add_command(commands, "broadcasts",
                             "a tenant's broadcasts: list, show, approve, reject, cancel",
                             None)
    broadcasts_commands = broadcasts.add_subparsers(dest="broadcasts_command", required=True,
                                                    parser_class=type(broadcasts))
    listing = add_command(broadcasts_commands, "list", "each broadcast and its progress",
                          database_command("TenantOnly", list_broadcasts), parents=database)
    listing.add_argument("tenant_id", metavar="TENANT")
    listing.add_argument("--json", action="store_true", help="a JSON list")
    show = add_command(broadcasts_commands, "show", "one broadcast, its progress and its waves",
                       database_command("BroadcastRef", show_broadcast), parents=database)
    show.add_argument("tenant_id", metavar="TENANT")
    show.add_argument("broadcast_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="one JSON object")
    for decision, summary in (("approve", "let a broadcast waiting for approval go ahead (another person)"),
                              ("reject", "reject a broadcast waiting for approval: every message cancelled")):
        decide = add_command(broadcasts_commands, decision, summary,
                             database_command("BroadcastDecision", decide_broadcast), parents=database)
        decide.set_defaults(decision=decision)
        decide.add_argument("tenant_id", metavar="TENANT")
        decide.add_argument("broadcast_id", metavar="ID")
        decide.add_argument("--as", dest="actor", metavar="NAME",
                            help="who decides (default: the database role)")
        decide.add_argument("--note", help="why, for the audit trail")
    cancel = add_command(broadcasts_commands, "cancel", "stop a broadcast: its pending messages are cancelled",
                         database_command("BroadcastRef", cancel_broadcast), parents=database)
    cancel.add_argument("tenant_id", metavar="TENANT")
    cancel.add_argument("broadcast_id", metavar="ID")

    cadence = add_command(
        commands, "cadence",
            "messages at offsets around an anchor, at a local time (renewals)",
        database_command("CadenceRequest", schedule_cadence), parents=database,
    )
    cadence.add_argument("tenant_id", metavar="TENANT")
    cadence.add_argument("ref_prefix", metavar="PREFIX", help="refs are PREFIX:-30d and so on")
    cadence.add_argument("--anchor", required=True, help="the instant they count from (ISO-8601)")
    cadence.add_argument("--offsets", default="-30d,-7d,-1d",
                         help="before (-) or after (+): default -30d,-7d,-1d")
    cadence.add_argument("--at-local", metavar="HH:MM",
                         help="the wall time of each (default: the anchor's own)")
    whose = cadence.add_mutually_exclusive_group(required=True)
    whose.add_argument("--contact", metavar="ID", help="read in the contact's zone")
    whose.add_argument("--tz", help="read in this IANA zone")
    cadence.add_argument("--payload", metavar="JSON", help="JSON payload of each; @FILE, - for stdin")
    cadence.add_argument("--callback-url", help="override the tenant's callback URL")
    cadence.add_argument("--category", default="transactional",
                         help="transactional (default) or e.g. marketing")


def _broadcast_request(args: argparse.Namespace) -> BroadcastRequest:
    from .arguments import BroadcastRequest

    return BroadcastRequest.from_args(args, datetime.now(UTC))


# Contacts --------------------------------------------------------------------------------------


class _Progress:
    """A progress line on a terminal's stderr (nothing when it is not a terminal)."""

    def __init__(self) -> None:
        self.shown = sys.stderr.isatty()
        self.started = time.monotonic()
        self._last = 0.0

    def rate(self, count: int) -> float:
        return count / max(time.monotonic() - self.started, 1e-6)

    def update(self, count: int, *, final: bool = False) -> None:
        if not self.shown or (not final and time.monotonic() - self._last < PROGRESS_EVERY_S):
            return
        self._last = time.monotonic()
        print(f"\r  {count:,} contacts  {self.rate(count):,.0f}/s", end="\n" if final else "", file=sys.stderr,
              flush=True)


async def import_contacts(store: Store, request: ContactsImportRequest) -> int:
    """Stream the file into reminderd.upsert_contact_rows in rounds of consecutive lines, each
    round split by contact id over two connections at once (the file is read and checked while
    the database writes) and committed on both only when both halves are taken: a round is
    imported whole or not at all, and rounds go in file order. A contact always goes through
    the same statement of its round, so where a file names it twice the later line wins.

    A line the database refuses (it names the element) is a bad line as one read here is: the
    round is written again without it and what follows it (the import stops there, everything
    before it imported, nothing after), or with --skip-invalid without it alone."""
    from .contact_files import open_contacts, read_contacts

    await require_tenant(store, request.tenant_id)  # before a line is read: one line, nothing imported
    try:
        handle = open_contacts(request.path)
    except OSError as exc:
        raise UsageError(f"FILE {request.path}: cannot read it ({exc.strerror})") from None
    rounds: asyncio.Queue[list[Line] | None] = asyncio.Queue(maxsize=2)
    progress = _Progress()
    totals = {"read": 0, "written": 0, "sent": 0}
    skipped: list[tuple[int, str]] = []
    refused: list[str] = []
    failed: list[Exception] = []

    async def write_rounds() -> None:
        while (lines := await rounds.get()) is not None:
            if refused or failed:
                continue  # a round was refused, or the database is gone: send nothing more
            try:
                await write(lines)
            except Exception as exc:  # raised once the reader stops (it would wait on the queue)
                failed.append(exc)

    async def write(lines: list[Line]) -> None:
        while lines:
            answer = await _write_round(store, request.tenant_id, lines)
            if isinstance(answer, int):
                totals["written"] += answer
                totals["sent"] += len(lines)
                progress.update(totals["sent"])
                return
            if isinstance(answer, str):  # no line named: nothing of these lines imported
                refused[:] = [answer]
                return
            if request.skip_invalid:
                skipped.extend(answer)
                lines = [line for line in lines if line.line not in dict(answer)]
                continue
            first, problem = min(answer)
            refused[:] = [f"line {first}: {problem}"]
            lines = [line for line in lines if line.line < first]  # imported, unless one is refused too

    writer = asyncio.create_task(write_rounds())
    pending: list[Line] = []
    round_size = request.batch_size * IMPORT_WORKERS
    stopped: str | None = None
    try:
        with handle:
            for line in read_contacts(handle, request.file_format):
                if refused or failed:
                    break
                if line.contact is None:
                    if not request.skip_invalid:
                        stopped = f"line {line.line}: {line.problem}"
                        break
                    skipped.append((line.line, str(line.problem)))
                    continue
                totals["read"] += 1
                pending.append(line)
                if len(pending) >= round_size:
                    await rounds.put(pending)
                    pending = []
                if totals["read"] % YIELD_EVERY == 0:
                    # Reading never waits on I/O: let the writer send a round or take its answer
                    # now, so neither connection idles while lines are read.
                    await asyncio.sleep(0)
        if pending and not (refused or failed):
            await rounds.put(pending)
    except OSError as exc:  # a byte that is not UTF-8 is its line's problem (contact_files.not_utf8)
        stopped = f"FILE {request.path}: cannot read it ({exc.strerror or exc})"
    finally:
        await rounds.put(None)
        await writer
    if failed:
        raise failed[0]
    progress.update(totals["sent"], final=True)
    elapsed_s = time.monotonic() - progress.started
    summary = (f"{totals['sent']:,} contacts imported into {request.tenant_id} ({totals['written']:,} new "
               "or changed) "
               f"in {elapsed_s:.1f} s, {progress.rate(totals['sent']):,.0f}/s")
    skipped.sort()
    for number, problem in skipped[:20]:
        print(f"reminderd: skipped line {number}: {problem}", file=sys.stderr)
    if len(skipped) > 20:
        print(f"reminderd: skipped {_lines(len(skipped) - 20, 'more invalid')}", file=sys.stderr)
    if stopped or refused:
        print(summary, file=sys.stderr)
        # A refusal is of a line before any the reader stopped at (rounds hold only lines before it).
        raise UsageError(f"{refused[0] if refused else stopped}; the import stopped there (importing again is "
                         "safe: contacts are updated, not duplicated)")
    print(summary + (f"; {_lines(len(skipped), 'invalid')} skipped" if skipped else ""))
    return 0


def _lines(count: int, kind: str) -> str:
    """"1 invalid line", "2 invalid lines"."""
    return f"{count:,} {kind} line{'' if count == 1 else 's'}"


class _Refused(Exception):
    """A half of a round was refused: every half's transaction is rolled back."""


async def _write_round(store: Store, tenant_id: str, lines: list[Line]) -> int | str | list[tuple[int, str]]:
    """One round of lines, split by contact id over IMPORT_WORKERS connections, each half in its
    own transaction, committed when every half was taken: how many contacts were added or
    changed. Otherwise nothing is committed, and the answer is the lines the database refused,
    with why ([(line, problem)]), or its reason when it named no element."""
    halves: list[list[Line]] = [[] for _ in range(IMPORT_WORKERS)]
    for line in lines:
        assert line.contact is not None
        halves[zlib.crc32(line.contact.contact_id.encode()) % IMPORT_WORKERS].append(line)
    halves = [half for half in halves if half]

    async def upsert(connection: Store, half: list[Line]) -> int | DatabaseRefused:
        try:
            return await connection.upsert_contact_rows(
                tenant_id, [line.contact for line in half if line.contact is not None])
        except DatabaseRefused as exc:
            return exc

    answers: list[int | DatabaseRefused] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            connections = [await stack.enter_async_context(store.transaction()) for _ in halves]
            answers = list(await asyncio.gather(*(
                upsert(connection, half) for connection, half in zip(connections, halves, strict=True))))
            if any(isinstance(answer, DatabaseRefused) for answer in answers):
                raise _Refused
    except _Refused:
        pass
    else:
        return sum(answer for answer in answers if isinstance(answer, int))
    bad: list[tuple[int, str]] = []
    for answer, half in zip(answers, halves, strict=True):
        if isinstance(answer, DatabaseRefused):
            named = _refused_line(answer, half)
            if named is None:
                return f"lines {lines[0].line}-{lines[-1].line}: {answer.message}" + (
                    f" ({answer.hint})" if answer.hint else "")
            bad.append(named)
    return bad


def _refused_line(exc: DatabaseRefused, batch: list[Line]) -> tuple[int, str] | None:
    """The file's line the database refused and why, where it names the batch's element (its
    error's column field, "contacts[17]"); None where it names none."""
    number = exc.batch_element
    if number is not None and number <= len(batch):
        return batch[number - 1].line, exc.element_said
    return None


async def remove_contacts(store: Store, request: ContactsRemoveRequest) -> int:
    removed = await store.delete_contacts(request.tenant_id, request.contact_ids)
    print(f"{removed:,} contacts removed from {request.tenant_id}")
    return 0


async def require_tenant(store: Store, tenant_id: str) -> None:
    """A command that reads or removes a tenant's rows refuses an unknown tenant (a typo, or a role
    that does not act for it) instead of finding nothing (these commands and cli.py's)."""
    if not await store.tenant_exists(tenant_id):
        raise UsageError(refusals.unknown_tenant(tenant_id))


async def show_contact(store: Store, request: ContactShowRequest) -> int:
    contact = await store.contact(request.tenant_id, request.contact_id)
    if contact is None:
        await require_tenant(store, request.tenant_id)
        raise UsageError(f'tenant "{request.tenant_id}" has no contact "{request.contact_id}"')
    messages = await store.contact_messages(request.tenant_id, request.contact_id, recent_s=request.recent_s)
    if request.as_json:
        print(json.dumps({"contact": _contact_json(contact), "messages": [_message_json(m) for m in messages]},
                         indent=2))
        return 0
    print(f"contact {contact.contact_id} of {request.tenant_id}")
    print(f"  timezone    {_zone_said(contact)}")
    for name, value in (("phone", contact.phone), ("country", contact.country),
                        ("audiences", ", ".join(contact.audiences) or None),
                        ("attributes", json.dumps(contact.attributes) if contact.attributes else None)):
        print(f"  {name:<11} {value or '-'}")
    live = [m for m in messages if m.status in ("pending", "picked", "paused", "awaiting_approval")]
    print(f"messages: {len(live)} live, {len(messages) - len(live)} ended in the last "
          f"{_duration(request.recent_s)}")
    rows = [("ID", "REF", "STATUS", "FIRE AT (UTC)", "ON ITS CLOCK", "ZONE (WHY)", "REASON")] + [(
        str(m.id), m.ref_id, m.status,
            m.fire_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ") if m.fire_at else "-",
        m.local_fire_at.strftime("%a %Y-%m-%d %H:%M") if m.local_fire_at else (m.recurrence or "-"),
        f"{m.timezone} ({m.timezone_source})", m.reason or "",
    ) for m in messages]
    _table(rows)
    return 0


def _zone_said(contact: Contact) -> str:
    why = {
        "contact": "its own timezone field", "phone": f"from its phone {contact.phone}",
        "country": f"its country {contact.country}", "tenant": "the tenant's default",
    }
    if contact.zone is None:
        return "none (no timezone, phone or country gives one, and the tenant has no default)"
    return f"{contact.zone} ({why.get(contact.zone_source or '', contact.zone_source)})"


def _contact_json(contact: Contact) -> dict[str, Any]:
    return {
        "contact_id": contact.contact_id, "timezone": contact.timezone, "phone": contact.phone,
        "country": contact.country, "attributes": contact.attributes, "zone": contact.zone,
        "timezone_source": contact.zone_source, "audiences": list(contact.audiences),
        "created_at": contact.created_at.isoformat(), "updated_at": contact.updated_at.isoformat(),
    }


def _message_json(message: ContactMessage) -> dict[str, Any]:
    return {
        "id": message.id, "ref_id": message.ref_id, "status": str(message.status),
        "fire_at": message.fire_at.isoformat() if message.fire_at else None,
        "local_fire_at": message.local_fire_at.isoformat() if message.local_fire_at else None,
        "timezone": message.timezone, "timezone_source": message.timezone_source,
            "recurrence": message.recurrence,
        "category": message.category, "broadcast_id": message.broadcast_id, "last_event": message.last_event,
        "reason": message.reason, "updated_at": message.updated_at.isoformat(),
    }


# Audiences ---------------------------------------------------------------------------------------


async def change_audience(store: Store, request: AudienceChange) -> int:
    if request.action == "add":
        added = await store.add_to_audience(request.tenant_id, request.audience, request.contact_ids)
        print(f"audience {request.audience}: {added:,} contacts added ({len(request.contact_ids) - added:,} "
              "were in it)")
    elif request.action == "remove":
        removed = await store.remove_from_audience(request.tenant_id, request.audience, request.contact_ids)
        print(f"audience {request.audience}: {removed:,} contacts removed")
    else:
        dropped = await store.drop_audience(request.tenant_id, request.audience)
        print(f"audience {request.audience} dropped" if dropped else f"no audience {request.audience}")
    return 0


async def list_audiences(store: Store, request: TenantOnly) -> int:
    await require_tenant(store, request.tenant_id)
    audiences = await store.audiences(request.tenant_id)
    if not audiences:
        print("no audiences")
        return 0
    _table([("AUDIENCE", "CONTACTS", "CREATED")] + [
        (a.name, f"{a.members:,}", a.created_at.astimezone(UTC).strftime("%Y-%m-%d")) for a in audiences])
    return 0


# Broadcasts --------------------------------------------------------------------------------------


# Who may call reminderd.broadcast() (docs/sql.md, Roles); a dry run calls it too, in a savepoint.
BROADCAST_ROLES = ("reminderd_app (a member of the tenant) or reminderd_daemon to broadcast, "
                   "--dry-run too, which makes the real call and rolls it back")


async def save_broadcast(store: Store, request: BroadcastRequest) -> int:
    try:
        if request.dry_run:  # the real call, rolled back: refused as it would be
            approval = await store.broadcast_dry_run(request)
            return await _dry_run(store, request, approval)
        broadcast_id = await store.broadcast(request)
    except DatabaseRefused as exc:  # a broadcast refused: its zones and counts on a line of their own
        if exc.sqlstate == "42501" and exc.hint is None:  # permission denied: the URL's role is wrong
            raise RoleRefused(exc, BROADCAST_ROLES) from None
        detail = f"\n  {exc.detail}" if exc.detail else ""
        raise UsageError(refusals.one_line(exc) + detail) from None
    print(broadcast_id)  # the id alone on stdout, for scripts
    progress = (await store.broadcasts(request.tenant_id, broadcast_id))[0]
    waves = await store.broadcast_occurrences(broadcast_id)
    if waves:
        wave = waves[0]
        first = wave.first_fire_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ") if wave.first_fire_at else "-"
        last = wave.last_fire_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ") if wave.last_fire_at else "-"
        said = f"broadcast {broadcast_id}: {wave.contacts:,} messages staged, first wave {first}, last {last}"
    else:
        said = (f"broadcast {broadcast_id}: recurring ({progress.cron or 'rrule'}); the daemon stages each "
                "wave ahead of its first zone, to the audience as it stands then")
    if progress.approval == "awaiting":
        said += f"; waiting for approval by someone other than {progress.created_by}"
    print(said, file=sys.stderr)
    return 0


async def _dry_run(store: Store, request: BroadcastRequest, approval: str) -> int:
    """The audience, its zones and why, and the sends per UTC hour of the (first) wave, of a
    broadcast the real call would take (store.broadcast_dry_run said so); the contacts it would
    not send to (in a zone this database server cannot read, or past a recurring one's until on
    their own clock) said apart."""
    local_time = request.local_time
    note, until = "", None
    if local_time is None:
        assert request.recurrence is not None
        now = datetime.now(UTC)
        zones_now = await store.broadcast_preview(request, now.replace(tzinfo=None))
        zones, _ = readable_zones([wave.timezone for wave in zones_now if wave.timezone is not None])
        try:
            recurring = Waves.parse(cron=request.recurrence.cron, rrule=request.recurrence.rrule,
                                    until=request.until, start=now)
        except InvalidSchedule as exc:
            raise UsageError(str(exc)) from None
        local_time = recurring.first(zones, now)
        if local_time is None:
            raise UsageError("the recurrence has no occurrence ahead")
        following = recurring.after(local_time, zones)
        note = f" (its first occurrence; the next is {following:%Y-%m-%d %H:%M})" if following else ""
        until = recurring.until
    waves = await store.broadcast_preview(request, local_time)
    total = sum(wave.contacts for wave in waves)
    placed = [wave for wave in waves if wave.timezone is not None and wave.fire_at is not None]
    zoned = [wave for wave in placed if until is None or (wave.fire_at is not None and wave.fire_at <= until)]
    unreadable = sum(wave.contacts for wave in waves if wave.timezone is not None and wave.fire_at is None)
    after_until = sum(wave.contacts for wave in placed) - sum(wave.contacts for wave in zoned)
    print(f"broadcast {request.ref_prefix} to {request.audience}, at {local_time:%Y-%m-%d %H:%M} on each "
          "contact's "
          f"clock{note}: {total:,} contacts in {len(zoned)} zones")
    if unreadable:
        print(f"  {unreadable:,} contacts in a zone this database server cannot read: their rows would be"
              " staged dead, saying so")
    if after_until:
        print(f"  {after_until:,} contacts not sent this occurrence: its instant in their zone is after the"
              " until")
    print("sends per UTC hour:")
    per_hour: dict[datetime, list[ZoneWave]] = {}
    for wave in zoned:
        assert wave.fire_at is not None
        per_hour.setdefault(wave.fire_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0),
                            []).append(wave)
    for hour, hour_waves in sorted(per_hour.items()):
        zones_said = ", ".join(str(w.timezone) for w in hour_waves)
        print(f"  {hour:%Y-%m-%dT%H:00Z}  {sum(w.contacts for w in hour_waves):>10,}  {zones_said}")
    print("zones (where their contacts' zones come from):")
    for wave in zoned:
        assert wave.fire_at is not None
        sources = ", ".join(f"{name} {count:,}" for name, count in (
            ("contact", wave.from_contact), ("phone", wave.from_phone), ("country", wave.from_country),
            ("tenant", wave.from_tenant)) if count)
        print(f"  {wave.timezone:<32} {wave.fire_at.astimezone(UTC):%Y-%m-%dT%H:%MZ}  {wave.contacts:>10,}  "
              f"({sources})")
    print("approval: " + ("needed: over the tenant's approval threshold, its messages would wait for another"
                          " person" if approval == "awaiting" else "not needed"))
    print("nothing was staged (--dry-run)")
    return 0


async def list_broadcasts(store: Store, request: TenantOnly) -> int:
    await require_tenant(store, request.tenant_id)
    broadcasts = await store.broadcasts(request.tenant_id)
    if request.as_json:
        print(json.dumps([_broadcast_json(b) for b in broadcasts], indent=2))
        return 0
    if not broadcasts:
        print("no broadcasts")
        return 0
    header = ("ID", "PREFIX", "AUDIENCE", "WHEN", "STAGED", "WAITING", "HELD", "SENT", "FAILED", "EXPIRED",
              "CANCELLED", "STATE")
    _table([header] + [(
        str(b.id), b.ref_prefix, b.audience, _when(b), f"{b.staged:,}", f"{b.waiting:,}", f"{b.held:,}",
        f"{b.sent:,}", f"{b.failed:,}", f"{b.expired:,}", f"{b.cancelled:,}", _state(b),
    ) for b in broadcasts], numbers=range(4, 11))
    return 0


async def show_broadcast(store: Store, request: BroadcastRef) -> int:
    found = await store.broadcasts(request.tenant_id, request.broadcast_id)
    if not found:
        await require_tenant(store, request.tenant_id)
        raise UsageError(f'tenant "{request.tenant_id}" has no broadcast {request.broadcast_id}')
    broadcast = found[0]
    waves = await store.broadcast_occurrences(broadcast.id)
    if request.as_json:
        print(json.dumps({**_broadcast_json(broadcast), "waves": [{
            "occurrence": w.occurrence.isoformat(), "contacts": w.contacts,
            "first_fire_at": w.first_fire_at.isoformat() if w.first_fire_at else None,
            "last_fire_at": w.last_fire_at.isoformat() if w.last_fire_at else None,
            "completed_at": w.completed_at.isoformat() if w.completed_at else None,
        } for w in waves]}, indent=2))
        return 0
    b = broadcast
    print(f"broadcast {b.id} of {b.tenant_id}: refs {b.ref_prefix}:CONTACT, {b.audience}, {_when(b)}, "
          f"{b.category}")
    print(f"  state       {_state(b)}" + (f" ({b.ended_reason})" if b.ended_reason else ""))
    approval = b.approval.replace("_", " ")
    if b.decided_by:
        approval += f" by {b.decided_by} at {b.decided_at:%Y-%m-%d %H:%M %Z}"
    print(f"  created by  {b.created_by} at {b.created_at.astimezone(UTC):%Y-%m-%d %H:%M}Z; approval "
          f"{approval}")
    print(f"  messages    {b.staged:,} staged: {b.waiting:,} waiting, {b.held:,} held, {b.sent:,} sent, "
          f"{b.failed:,} failed, {b.expired:,} expired, {b.cancelled:,} cancelled")
    if b.next_occurrence:
        print(f"  next wave   {b.next_occurrence:%Y-%m-%d %H:%M} on each contact's clock")
    if b.last_error:
        print(f"  last error  {b.last_error}")
    for wave in waves:
        first = wave.first_fire_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ") if wave.first_fire_at else "-"
        last = wave.last_fire_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ") if wave.last_fire_at else "-"
        done = f", completed {wave.completed_at.astimezone(UTC):%Y-%m-%dT%H:%MZ}" if wave.completed_at else ""
        print(f"  wave {wave.occurrence:%Y-%m-%d %H:%M}: {wave.contacts:,} contacts, {first} to {last}{done}")
    return 0


async def decide_broadcast(store: Store, request: BroadcastDecision) -> int:
    if request.approve:
        released = await store.approve_broadcast(request.tenant_id, request.broadcast_id, actor=request.actor,
                                                 note=request.note)
        print(f"broadcast {request.broadcast_id} approved: {released:,} messages released")
    else:
        cancelled = await store.reject_broadcast(request.tenant_id, request.broadcast_id, actor=request.actor,
                                                 note=request.note)
        print(f"broadcast {request.broadcast_id} rejected: {cancelled:,} messages cancelled")
    return 0


async def cancel_broadcast(store: Store, request: BroadcastRef) -> int:
    cancelled = await store.cancel_broadcast(request.tenant_id, request.broadcast_id)
    print(f"broadcast {request.broadcast_id} cancelled: {cancelled:,} messages cancelled")
    return 0


def _when(b: BroadcastProgress) -> str:
    if b.local_time is not None:
        return f"{b.local_time:%Y-%m-%d %H:%M} local"
    return f"cron {b.cron}" if b.cron else "rrule"


def _state(b: BroadcastProgress) -> str:
    if b.done:
        return "done"
    if b.approval == "awaiting":
        return "awaiting approval"
    if b.approval == "rejected":
        return "rejected"
    return "sending" if b.ended_at is not None else "recurring"


def _broadcast_json(b: BroadcastProgress) -> dict[str, Any]:
    return {
        "id": b.id, "ref_prefix": b.ref_prefix, "audience": b.audience,
        "local_time": b.local_time.isoformat() if b.local_time else None, "cron": b.cron, "rrule": b.rrule,
        "category": b.category, "approval": b.approval, "created_by": b.created_by,
        "decided_by": b.decided_by, "occurrences": b.occurrences,
        "counts": {"staged": b.staged, "waiting": b.waiting, "held": b.held, "sent": b.sent, "failed": b.failed,
                   "expired": b.expired, "cancelled": b.cancelled},
        "done": b.done, "state": _state(b),
            "next_occurrence": b.next_occurrence.isoformat() if b.next_occurrence
        else None, "last_error": b.last_error,
    }


# Cadences ----------------------------------------------------------------------------------------


async def schedule_cadence(store: Store, request: CadenceRequest) -> int:
    steps = await store.schedule_cadence(request)
    _table([("REF", "MESSAGE", "FIRE AT (UTC)", "ON ITS CLOCK", "")] + [(
        step.ref_id, str(step.message_id) if step.message_id else "-",
        step.fire_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ"), step.local_time.strftime("%a %Y-%m-%d %H:%M"),
        _cadence_outcome(step),
    ) for step in steps])
    return 0


def _cadence_outcome(step: CadenceStep) -> str:
    said = [f"skipped: {step.skipped}"] if step.skipped else []
    if step.outcome == "replaced":
        said.append(f"replaced message {step.cancelled_id}")
    elif step.outcome == "cancelled":
        said.append(f"cancelled message {step.cancelled_id}")
    return "; ".join(said)


# Output ------------------------------------------------------------------------------------------


def _table(rows: Sequence[tuple[str, ...]], numbers: range = range(0)) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        cells = [cell.rjust(width) if index in numbers else cell.ljust(width)
                 for index, (cell, width) in enumerate(zip(row, widths, strict=True))]
        print("  ".join(cells).rstrip())


def _duration(seconds: float) -> str:
    return f"{seconds / 86400:g} days" if seconds >= 86400 else f"{seconds / 3600:g} hours"
