"""What a schedule request must be, checked before any database connection: the one set of rules
the command line (reminderd/arguments.py) and the HTTP API (reminderd/api.py) both call.

Every function raises InvalidInput with one line naming the field as its caller calls it (`--at`
on the command line, `fire_at` over HTTP: see `Names`) and what is wrong with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from . import callback_urls
from .duration import EXAMPLES, parse_seconds
from .exceptions import InvalidInput as InvalidInput  # its home is exceptions.py; named here too
from .payload import PayloadError, check_encoded, check_payload
from .schedule import (
    BACKFILL_POLICIES,
    DEFAULT_MAX_LATENESS_S,
    Arrival,
    Holidays,
    InvalidSchedule,
    OffTheCalendar,
    PreviewEntry,
    QuietHours,
    Timing,
    UnknownPhrase,
    anchor_rrule,
    arrival,
    compile_phrase,
    describe,
    duration_text,
    first_occurrence,
    iso_utc,
    load_iana_timezone,
    load_timezone,
    not_an_iana_zone,
    parse_rrule,
    preview,
    to_instant,
    validate_calendar,
    validate_cron,
)

MAX_DELAY_S = 100 * 365 * 86400
MAX_INT4 = 2**31 - 1
MAX_PREVIEW = 1000  # fires a preview lists
MAX_ATTEMPTS = 1000  # as REMINDERD_MAX_ATTEMPTS allows
_LAST_CLOCK = "Etc/GMT+12"  # UTC-12: the zone whose clock reads a wall time last (Etc/ signs are inverted)
HOLIDAY_RULES = ("skip", "send")
# What the schema's CHECK constraints ask, asked before connecting (migrations 0001 and 0003).
_TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_CATEGORY = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_CONTACT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}")  # migration 0009's contact_id_format


@dataclass(frozen=True)
class Names:
    """What each input is called where it came from, for the messages (and the API's pointers)."""

    at: str = "--at"
    delay: str = "--in"
    local_time: str = "local_time"
    cron: str = "--cron"
    every: str = "--every"
    rrule: str = "--rrule"
    tz: str = "--tz"
    ref: str = "REF"
    payload: str = "--payload"
    callback_url: str = "--callback-url"
    until: str = "--until"
    max_runs: str = "--max-runs"
    category: str = "--category"
    calendar: str = "--calendar"
    holiday_rule: str = "--holiday-rule"
    backfill: str = "--backfill"
    max_lateness: str = "--max-lateness"
    max_attempts: str = "--max-attempts"
    quiet: str = "--quiet"
    start: str = "--from"
    count: str = "-n"
    contact: str = "--contact"
    # How the message for an offset-less instant ends: where a wall time goes instead.
    wall_time_hint: str = "or say --tz Region/City"


CLI_NAMES = Names()
API_NAMES = Names(
    at="fire_at", delay="fire_in", cron="cron", every="every", rrule="rrule", tz="timezone", ref="ref_id",
    payload="payload", callback_url="callback_url", until="until", max_runs="max_runs", category="category",
    calendar="calendar", holiday_rule="holiday_rule", backfill="backfill", max_lateness="max_lateness",
    max_attempts="max_attempts", quiet="quiet_hours", start="from", count="n", contact="contact_id",
    wall_time_hint="or send it as local_time with a timezone",
)


def parse_duration(text: str, flag: str = "--in", *, allow_zero: bool = False) -> timedelta:
    """A positive duration, read as reminderd reads every duration (reminderd/duration.py):
    '90s', '15m', '2h', '3d', '1h30m', 'PT2H', or a bare number of seconds."""
    try:
        seconds = parse_seconds(text)
    except ValueError as exc:
        raise InvalidInput(f"{flag} {text!r}: {exc}", flag) from None
    if seconds < 0:
        raise InvalidInput(f"{flag} {text!r}: a duration cannot be negative; {EXAMPLES}", flag)
    if seconds == 0 and not allow_zero:
        raise InvalidInput(f"{flag} {text!r}: the delay must be positive", flag)
    if seconds > MAX_DELAY_S:
        raise InvalidInput(f"{flag} {text!r}: the delay must be under 100 years", flag)
    return timedelta(seconds=seconds)


def split_zone(text: str) -> tuple[str, str | None]:
    """ "2026-12-24 09:00 in Asia/Kolkata" -> ("2026-12-24 09:00", "Asia/Kolkata")."""
    when, found, zone = text.rpartition(" in ")
    return (when, zone.strip()) if found and when.strip() else (text, None)


def parse_instant(text: str, tz_name: str | None, flag: str = "--at", *, names: Names = CLI_NAMES) -> datetime:
    """An ISO-8601 instant. Without a UTC offset it is a wall time in the timezone (or in the zone it
    names: "2026-12-24 09:00 in Asia/Kolkata"): a time repeated when clocks go back means its
    first occurrence, one skipped when they go forward the jump."""
    when, zone = split_zone(text)
    if zone is not None:
        if tz_name is not None and tz_name != zone:
            raise InvalidInput(f"{flag} {text!r} names {zone}, but {names.tz} says {tz_name}", flag)
        tz_name = zone
    try:
        value = datetime.fromisoformat(when.strip())
    except ValueError:
        raise InvalidInput(f"{flag} {text!r} is not ISO-8601, e.g. 2026-12-24T09:00:00Z", flag) from None
    if value.tzinfo is None and tz_name is None:
        raise InvalidInput(
            f"{flag} {text!r} has no UTC offset: add one (Z, +05:30) {names.wall_time_hint}", flag
        )
    try:
        if value.tzinfo is not None or tz_name is None:
            return value.astimezone(UTC)
        return to_instant(value, load_timezone(tz_name))
    except InvalidSchedule as exc:
        raise InvalidInput(f"{flag}: {exc}", flag) from None
    except OverflowError:  # 0001-01-01T00:00+05:00 is before the first instant Python can hold
        raise InvalidInput(f"{flag} {text!r} is outside the years 1 to 9999 in UTC", flag) from None


def parse_wall_time(text: str, flag: str = "local_time") -> datetime:
    """A wall-clock time without a UTC offset (read later in the recipient's timezone)."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"{flag} {text!r} is not ISO-8601, e.g. 2026-12-24T09:00:00", flag) from None
    if value.tzinfo is not None:
        raise InvalidInput(f"{flag} {text!r} is a wall time: drop its UTC offset, or send it as fire_at", flag)
    return value


def parse_wall_or_instant(text: str, flag: str) -> datetime:
    """An ISO-8601 instant (with its UTC offset: aware) or a wall time (without: naive), for a time
    read in a zone only the database knows (a contact's)."""
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"{flag} {text!r} is not ISO-8601, e.g. 2026-12-24T09:00", flag) from None


def parse_payload(text: str | None, flag: str = "--payload", *, encoded: bool = False) -> str:
    """The payload's JSON text, checked as PostgreSQL will take it and kept exactly as given.
    `encoded`: json.dumps wrote it from a parsed value (the API), so it is valid JSON already."""
    if text is None:
        return "{}"
    try:
        return check_encoded(text) if encoded else check_payload(text)
    except PayloadError as exc:
        raise InvalidInput(f"{flag} {exc}", flag) from None


@dataclass(frozen=True)
class Recurrence:
    """A recurring schedule as given by a cron expression, a phrase (--every) or an RRULE."""

    cron: str | None = None
    rrule: str | None = None
    phrase: str | None = None  # the --every text it was compiled from

    @classmethod
    def parse(
        cls, *, cron: str | None, every: str | None, rrule: str | None, timezone: str, start: datetime,
        names: Names = CLI_NAMES, until_as_instant: bool = False,
    ) -> Recurrence | None:
        """None when none is given. An RRULE without DTSTART is checked as the database will
        store it: anchored at the local midnight of `start`. `until_as_instant`: an UNTIL=…Z bounds
        no wall time (a broadcast's rule, read on each contact's clock: schedule.Waves)."""
        field = names.cron if cron is not None else names.every if every is not None else names.rrule
        try:
            if cron is not None:
                validate_cron(cron)
                return cls(cron=cron)
            if every is not None:
                return cls(cron=compile_phrase(every), phrase=every)
            if rrule is not None:
                rrule = rrule.replace("\\n", "\n")
                parse_rrule(anchor_rrule(rrule, timezone, start), timezone, until_as_instant=until_as_instant)
                return cls(rrule=rrule)
        except (InvalidSchedule, UnknownPhrase) as exc:
            raise InvalidInput(str(exc), field) from None
        return None

    def check_not_ended(self, timezone: str, now: datetime, names: Names) -> None:
        """InvalidInput when an RRULE has no occurrence left after `now` (its UNTIL, or all its
        COUNT occurrences, already past) on `timezone`'s clock: it would finish without sending."""
        if self.rrule is None:
            return
        try:
            why = parse_rrule(anchor_rrule(self.rrule, timezone, now), timezone).ended_by(now)
        except InvalidSchedule as exc:
            raise InvalidInput(str(exc), names.rrule) from None
        if why is not None:
            raise InvalidInput(f"{names.rrule} ends before it starts: {why}; nothing would ever be sent",
                               names.rrule)

    def field(self, names: Names) -> str:
        """What the caller called the input this recurrence came from."""
        return names.rrule if self.rrule is not None else names.every if self.phrase else names.cron

    def description(self, timezone: str, start: datetime) -> str:
        if self.rrule is not None:
            return parse_rrule(anchor_rrule(self.rrule, timezone, start), timezone).describe()
        assert self.cron is not None
        said = describe(self.cron)
        return f'"{self.phrase}" = cron "{self.cron}": {said}' if self.phrase else f'cron "{self.cron}": {said}'


def checked_timezone(name: str | None, flag: str = "--tz") -> str:
    """An IANA zone as its file is spelt (what the daemon can read); None is UTC. A wrong case
    gets the hint the database gives (reminderd.check_timezone): "America/New_York"."""
    if name is None:
        return "UTC"
    if not name.strip():
        raise InvalidInput(f"{flag} is empty: name an IANA zone such as Europe/London or Asia/Kolkata", flag)
    try:
        load_iana_timezone(name)
    except InvalidSchedule as exc:
        spelt = _zone_spelt(name.strip())
        hint = ("; write it without spaces around it" if spelt == name.strip()
                else f"; timezone names are case-sensitive: {spelt}" if spelt else "")
        raise InvalidInput(f"{flag}: {exc}{hint}", flag) from None
    return name


_ZONE_SPELLINGS: dict[str, str] = {}  # every zone tzdata knows, by its lower-case name


def _zone_spelt(name: str) -> str | None:
    """The zone `name` is in another case ("america/new_york": "America/New_York"), or None. The
    zones are listed once, the first time a name is not found."""
    if not _ZONE_SPELLINGS:
        import zoneinfo  # only here: listing tzdata reads a directory

        _ZONE_SPELLINGS.update((zone.lower(), zone) for zone in zoneinfo.available_timezones()
                               if not_an_iana_zone(zone) is None)
    return _ZONE_SPELLINGS.get(name.lower())


def checked_calendar(code: str | None, flag: str = "--calendar") -> str | None:
    if code is not None:
        try:
            validate_calendar(code)
        except InvalidSchedule as exc:
            raise InvalidInput(f"{flag}: {exc}", flag) from None
    return code


def checked_quiet(text: str | None, flag: str = "--quiet") -> QuietHours | None:
    if text is None:
        return None
    try:
        return QuietHours.parse(text)
    except ValueError as exc:
        raise InvalidInput(f"{flag}: {exc}", flag) from None


def checked_tenant_id(text: str) -> str:
    if not _TENANT_ID.fullmatch(text):
        raise InvalidInput(
            f"tenant {text!r}: letters, digits and _ . : -, starting with a letter or digit, at most 128",
            "tenant",
        )
    return text


def checked_contact_id(text: str, flag: str = "CONTACT") -> str:
    if not _CONTACT_ID.fullmatch(text):
        raise InvalidInput(
            f"{flag} {text!r}: letters, digits and _ . : @ + -, starting with a letter or digit, at most 128",
            flag,
        )
    return text


def checked_ref(text: str, flag: str = "REF") -> str:
    if not text:
        raise InvalidInput(f"{flag} is empty: name the message, e.g. booking:b7d2:24h", flag)
    return text


def checked_callback_url(url: str | None, flag: str = "--callback-url") -> str | None:
    """The URL, or InvalidInput saying what is wrong with it: the rule SQL keeps too
    (reminderd/callback_urls.py), so nothing the database or the daemon would refuse is sent on."""
    if url is None:
        return None
    wrong = callback_urls.problem(url)
    if wrong == callback_urls.UNREADABLE:
        raise InvalidInput(
            f"{flag} {url!r}: use an http:// or https:// URL, like https://example.com/hooks", flag
        )
    if wrong:
        written = callback_urls.idna_form(url)
        suggestion = f" (as {written})" if written else ""
        raise InvalidInput(f"{flag} {url!r} {wrong}{suggestion}", flag)
    return url


def checked_category(text: str, flag: str = "--category") -> str:
    if not _CATEGORY.fullmatch(text):
        raise InvalidInput(f"{flag} {text!r}: lower-case letters, digits, _ and -, like marketing", flag)
    return text


def checked_choice(value: str | None, choices: tuple[str, ...], flag: str) -> str | None:
    if value is not None and value not in choices:
        raise InvalidInput(f"{flag} {value!r}: one of {', '.join(choices)}", flag)
    return value


def checked_int(value: int | None, flag: str, *, minimum: int, maximum: int) -> int | None:
    if value is None:
        return None
    if value < minimum:
        raise InvalidInput(f"{flag} {value}: must be at least {minimum}", flag)
    if value > maximum:
        raise InvalidInput(f"{flag} {value}: at most {maximum}", flag)
    return value


class TenantCalendar(Protocol):
    """What of a tenant times a recurring message's first occurrence (rows.TenantCalendar)."""

    @property
    def calendar(self) -> str | None: ...
    @property
    def holiday_rule(self) -> str: ...
    @property
    def holiday_days(self) -> tuple[date, ...]: ...
    @property
    def holiday_names(self) -> tuple[str, ...]: ...


def too_late(what: str, late: Arrival, names: Names = CLI_NAMES) -> str:
    """The one line for a one-off refused as dead on arrival (the database says it the same way)."""
    allow = "" if late.beyond_lookback else (
        f"; {names.max_lateness} (or {names.backfill} latest) allows later"
    )
    return (f"{what} was {duration_text(late.late_s)} ago: too late to send, {late.why()}, so it would "
            f"expire at once; schedule it for now or later{allow}")


def checked_until(
    recurrence: Recurrence, timezone: str, until: datetime, text: str, now: datetime, names: Names = CLI_NAMES
) -> None:
    """A recurring schedule must have an occurrence before its until (holidays aside: those need
    the tenant's calendar, checked once connected: ScheduleRequest.with_first_occurrence)."""
    flag = names.until
    if until <= now:
        raise InvalidInput(f"{flag} {text!r} is already past: the schedule would finish without sending", flag)
    rrule = None if recurrence.rrule is None else anchor_rrule(recurrence.rrule, timezone, now)
    try:
        first = Timing(timezone=timezone, cron=recurrence.cron, rrule=rrule).occurrence_after(now)
    except InvalidSchedule as exc:
        raise InvalidInput(str(exc), recurrence.field(names)) from None
    if first is None:
        raise InvalidInput(
            f"{flag} {text!r}: the schedule has no occurrence left, so nothing would be sent", flag
        )
    if first > until:
        first_at = iso_utc(first, timespec="auto")
        raise InvalidInput(f"{flag} {text!r} is before the first occurrence, {first_at}: nothing is sent", flag)


@dataclass(frozen=True)
class ScheduleRequest:
    """A message to schedule, checked before any connection is made. One of: `fire_at` (an
    instant), `fire_in_s` (a delay the database adds to its clock), `local_time` (a wall time the
    database reads in `timezone`) or `recurrence`. With a `contact_id` and no timezone, the zone is
    the contact's (docs/audiences.md): known to the database only, which places a wall time in it
    and times a recurrence's first occurrence."""

    tenant_id: str
    ref_id: str
    payload_json: str  # as given, checked: never decoded and encoded again
    callback_url: str | None
    timezone: str | None = "UTC"  # None: the contact's zone
    fire_at: datetime | None = None
    recurrence: Recurrence | None = None
    until: datetime | None = None
    max_runs: int | None = None
    category: str = "transactional"
    calendar: str | None = None
    holiday_rule: str | None = None
    backfill: str | None = None
    max_lateness_s: float | None = None
    fire_in_s: float | None = None
    local_time: datetime | None = None  # naive
    max_attempts: int | None = None
    first_fire_at: datetime | None = None  # a recurring row's first occurrence, when computed
    arrival: Arrival | None = None  # a one-off's: how late it already is (sent at once if late)
    contact_id: str | None = None  # the contact it is for
    names: Names = CLI_NAMES  # what the caller calls each input, for the messages after build()

    @classmethod
    def build(
        cls, *, tenant_id: str, ref_id: str, now: datetime, names: Names = CLI_NAMES,
        at: str | None = None, delay: str | None = None, local_time: str | None = None,
        cron: str | None = None, every: str | None = None, rrule: str | None = None, tz: str | None = None,
        payload_json: str | None = None, callback_url: str | None = None, until: str | None = None,
        max_runs: int | None = None, category: str = "transactional", calendar: str | None = None,
        holiday_rule: str | None = None, backfill: str | None = None, max_lateness: str | None = None,
        max_attempts: int | None = None, delay_at_now: bool = True, payload_encoded: bool = False,
        contact_id: str | None = None,
    ) -> ScheduleRequest:
        """Check every value. `delay_at_now`: a delay becomes fire_at = now + delay (the command
        line); otherwise it is kept as fire_in_s for the database's clock (the API, whose identical
        retries of a `fire_in` call then find the message the first one created).

        Nothing dead on arrival: a one-off already too late for its backfill policy is refused
        (the rule the database applies at insert, reminderd.check_arrival), and so is a recurring
        one whose until leaves it no occurrence. A contact's zone is known to the database only:
        there a wall time's lateness and a recurrence's until are checked in it."""
        given = [name for name, value in ((names.at, at), (names.delay, delay), (names.local_time, local_time),
                                          (names.cron, cron), (names.every, every), (names.rrule, rrule))
                 if value is not None]
        if len(given) > 1:
            raise InvalidInput(f"give only one of {', '.join(given)}", given[1])
        at_zone = None if at is None else split_zone(at)[1]
        contact = None if contact_id is None else checked_contact_id(contact_id, names.contact)
        contacts_zone = contact is not None and tz is None and at_zone is None
        # The recipient's (UTC: the contact's, for now), named by where it was written: --tz, or
        # --at's "… in Region/City". An empty --tz is refused, not taken for UTC.
        timezone = checked_timezone(tz, names.tz) if tz is not None else checked_timezone(at_zone, names.at)
        # A contact's zone is not known here: its recurrence is read on the last clock of all,
        # UTC-12's (the earliest date: an RRULE without DTSTART is anchored at its midnight), so
        # that only a rule that never fires, or has ended, in every zone is refused. An UNTIL=…Z
        # still ahead is after that midnight too.
        clock = _LAST_CLOCK if contacts_zone else timezone
        recurrence = Recurrence.parse(
            cron=cron, every=every, rrule=rrule, timezone=clock, start=now, names=names
        )
        if recurrence is not None:
            recurrence.check_not_ended(clock, now, names)
        if recurrence is None and (until is not None or max_runs is not None):
            raise InvalidInput(
                f"{names.until} and {names.max_runs} end a recurring schedule: use them with "
                f"{names.cron}, {names.every} or {names.rrule}",
                names.until if until is not None else names.max_runs,
            )
        checked_int(max_runs, names.max_runs, minimum=1, maximum=MAX_INT4)
        checked_int(max_attempts, names.max_attempts, minimum=1, maximum=MAX_ATTEMPTS)
        checked_category(category, names.category)
        fire_at = fire_in_s = wall = None
        max_lateness_s = None if max_lateness is None else parse_duration(
            max_lateness, names.max_lateness, allow_zero=True).total_seconds()
        backfill = checked_choice(backfill, BACKFILL_POLICIES, names.backfill)
        due_at, when = None, None  # a one-off's instant, and how the caller wrote it
        if delay is not None:
            wait = parse_duration(delay, names.delay)
            if delay_at_now:
                fire_at = now + wait
            else:
                fire_in_s = wait.total_seconds()
        elif at is not None and contacts_zone:  # an offset-less --at is a wall time in the contact's zone
            written = parse_wall_or_instant(at, names.at)
            if written.tzinfo is None:
                wall = written
            else:
                fire_at = due_at = written.astimezone(UTC)
                when = (names.at, at)
        elif at is not None:
            fire_at = due_at = parse_instant(at, tz, names.at, names=names)
            when = (names.at, at)
        elif local_time is not None and contacts_zone:
            wall = parse_wall_time(local_time, names.local_time)
        elif local_time is not None:
            if tz is None:
                raise InvalidInput(f"{names.local_time} needs {names.tz}: the recipient's, e.g. Asia/Kolkata",
                                   names.tz)
            wall = parse_wall_time(local_time, names.local_time)
            try:
                due_at = to_instant(wall, load_timezone(timezone))
                when = (names.local_time, local_time)
            except OverflowError:
                raise InvalidInput(f"{names.local_time} {local_time!r} is outside the years 1 to 9999",
                                   names.local_time) from None
        elif recurrence is None:
            raise InvalidInput(
                f"say when: one of {names.at}, {names.delay}, {names.local_time}, {names.cron}, {names.every} "
                f"or {names.rrule}", names.at,
            )
        on_arrival = None
        if due_at is not None and when is not None:
            on_arrival = arrival(due_at, now, backfill=backfill, max_lateness_s=max_lateness_s)
            if on_arrival.too_late:
                field, text = when
                raise InvalidInput(too_late(f"{field} {text!r}", on_arrival, names), field)
        until_at = None if until is None else parse_instant(until, timezone, flag=names.until, names=names)
        if recurrence is not None and until is not None and until_at is not None:
            if not contacts_zone:
                checked_until(recurrence, timezone, until_at, until, now, names)
            elif until_at <= now:
                raise InvalidInput(
                    f"{names.until} {until!r} is already past: the schedule would finish without sending",
                    names.until,
                )
        return cls(
            tenant_id=checked_tenant_id(tenant_id), ref_id=checked_ref(ref_id, names.ref),
            payload_json=parse_payload(payload_json, names.payload, encoded=payload_encoded),
            callback_url=checked_callback_url(callback_url, names.callback_url),
            timezone=None if contacts_zone else timezone, fire_at=fire_at, recurrence=recurrence,
            until=until_at,
            max_runs=max_runs, category=category, calendar=checked_calendar(calendar, names.calendar),
            holiday_rule=checked_choice(holiday_rule, HOLIDAY_RULES, names.holiday_rule),
            backfill=backfill, max_lateness_s=max_lateness_s,
            fire_in_s=fire_in_s, local_time=wall, max_attempts=max_attempts, arrival=on_arrival,
            contact_id=contact, names=names,
        )

    def late_note(self) -> str | None:
        """For a one-off already (slightly) past: that it is sent now, and why that is allowed."""
        if self.arrival is None or not self.arrival.late:
            return None
        return f"it was due {duration_text(self.arrival.late_s)} ago: sent now ({self.arrival.why()})"

    def with_first_occurrence(self, tenant: TenantCalendar, now: datetime) -> ScheduleRequest:
        """A recurring request given its first fire_at, timed as the daemon's planner would time it
        (the tenant's holidays skipped): `reminderd status`, the views and the API's answer show it
        at once. Its RRULE is anchored here, so that the database stores the rule this was
        computed from. InvalidInput when nothing would ever be sent. In a contact's zone (known to
        the database only) it is left to the database: reminderd.schedule_recurring times it there."""
        recurrence = self.recurrence
        assert recurrence is not None, "a one-off has its fire_at"
        if self.timezone is None:
            return self
        rrule = None if recurrence.rrule is None else anchor_rrule(recurrence.rrule, self.timezone, now)
        timing = Timing.from_row({
            "timezone": self.timezone, "cron": recurrence.cron, "rrule": rrule, "until": self.until,
            "max_runs": self.max_runs, "runs": 0,
            "calendar": self.calendar or tenant.calendar, "calendar_from_tenant": self.calendar is None,
            "holiday_rule": self.holiday_rule or tenant.holiday_rule,
            "holiday_days": tenant.holiday_days, "holiday_names": tenant.holiday_names,
            "quiet_start": None, "quiet_end": None, "backfill": self.backfill or "send",
            "max_lateness_s": self.max_lateness_s or DEFAULT_MAX_LATENESS_S,
        })
        field = recurrence.field(self.names)
        try:
            timing.check()
            first, why_not = first_occurrence(timing, now)
        except InvalidSchedule as exc:
            raise InvalidInput(str(exc), field) from None
        if first is None:  # an until leaves it nothing (holidays before it), or the rule has ended
            raise InvalidInput(f"nothing would ever be sent: {why_not}",
                               self.names.until if self.until is not None else field)
        return replace(self, recurrence=replace(recurrence, rrule=rrule), first_fire_at=first)

    def description(self, fire_at: datetime | None, now: datetime) -> str:
        """What was understood, in words: the recurrence, or the instant in UTC and on the
        recipient's clock."""
        zone = self.timezone or f"contact {self.contact_id}'s timezone"
        if self.recurrence is not None:
            return f"{self.recurrence.description(self.timezone or 'UTC', now)} ({zone})"
        when = fire_at or self.fire_at
        if when is None:
            return "once"
        if self.timezone is None:
            return f"once, at {iso_utc(when, timespec='auto')} (in {zone})"
        local = when.astimezone(load_timezone(self.timezone)).strftime("%Y-%m-%d %H:%M:%S")
        return f"once, at {iso_utc(when, timespec='auto')} ({local} {self.timezone})"


@dataclass(frozen=True)
class PreviewRequest:
    """A preview: a schedule read in a zone, from an instant, shown n times."""

    recurrence: Recurrence
    timezone: str
    start: datetime
    calendar: str | None
    quiet: QuietHours | None
    count: int
    as_json: bool
    names: Names = CLI_NAMES  # what the caller calls each input, for the errors
    start_given: bool = False  # a start was given (not now)

    @classmethod
    def build(
        cls, *, now: datetime, cron: str | None, every: str | None, rrule: str | None, tz: str | None,
        calendar: str | None, quiet: str | None, start: str | None, count: int, as_json: bool = False,
        names: Names = CLI_NAMES,
    ) -> PreviewRequest:
        checked_int(count, names.count, minimum=1, maximum=MAX_PREVIEW)
        given = [name for name, value in ((names.cron, cron), (names.every, every), (names.rrule, rrule))
                 if value is not None]
        if len(given) != 1:
            raise InvalidInput(f"give exactly one of {names.cron}, {names.every} and {names.rrule}",
                               given[1] if given else names.cron)
        timezone = checked_timezone(tz, names.tz)
        begin = now if start is None else parse_instant(start, timezone, flag=names.start, names=names)
        recurrence = Recurrence.parse(cron=cron, every=every, rrule=rrule, timezone=timezone, start=begin,
                                      names=names)
        assert recurrence is not None
        return cls(
            recurrence=recurrence, timezone=timezone, start=begin,
            calendar=checked_calendar(calendar, names.calendar), quiet=checked_quiet(quiet, names.quiet),
            count=count, as_json=as_json, names=names, start_given=start is not None,
        )

    def timing(self) -> Timing:
        """The schedule as the daemon would time it (holidays of the calendar, quiet hours)."""
        recurrence = self.recurrence
        return Timing(
            timezone=self.timezone, cron=recurrence.cron,
            rrule=None if recurrence.rrule is None
            else anchor_rrule(recurrence.rrule, self.timezone, self.start),
            holidays=Holidays.of(self.calendar), quiet=self.quiet,
        )

    def entries(self) -> list[PreviewEntry]:
        """The next fires; InvalidInput naming what to change when they run off the calendar: the
        start when none fits (or, not given, the schedule), the count when only some do."""
        try:
            return preview(self.timing(), self.start, self.count)
        except OffTheCalendar as off:
            names, count = self.names, self.count
            blame = names.start if self.start_given else self.recurrence.field(names)
            if off.early:  # before the year 1, on the zone's clock
                raise InvalidInput(f"the next {count} fires fall before the year 1 on the clock of "
                                   f"{self.timezone}: start later ({names.start})", names.start) from None
            if off.fits == 0:
                fix = f"start earlier ({blame})" if self.start_given else f"{blame} starts too late"
                raise InvalidInput(f"the next {count} fires run past the year 9999: none falls before it "
                                   f"ends; {fix}", blame) from None
            falls = "falls" if off.fits == 1 else "fall"
            raise InvalidInput(f"the next {count} fires run past the year 9999: only {off.fits} {falls} "
                               f"before it ends; ask for {off.fits} or fewer ({names.count})",
                               names.count) from None
