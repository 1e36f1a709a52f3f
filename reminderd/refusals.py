"""What the database refused, as one line for a person (the CLI's, and the HTTP API's detail).

The SQL functions and triggers raise sentences already: a message, a DETAIL and a HINT a DBA
understands, with the SQLSTATEs docs/sql.md lists ('tenant "acme" already exists', 'unknown tenant
"acme"'); those are kept as written, the hint after them. A bare constraint violation in
PostgreSQL's own words ('duplicate key value violates unique constraint "tenants_pkey"', which a
race between two inserts can still give) is said here instead, by the constraint's name: every
constraint of the schema has a sentence (tests/unit/test_refusals.py keeps it so). Pure: no I/O.
"""

from __future__ import annotations

import re

from .exceptions import DatabaseRefused

__all__ = ["CONSTRAINTS", "one_line", "unknown_tenant"]

_CALENDAR = "a holiday calendar is a country code such as IN or GB, or a subdivision such as US-CA"

# {value}: the values the error's DETAIL names ("Key (tenant_id, ref_id)=(acme, r1)" -> "acme / r1").
CONSTRAINTS: dict[str, str] = {
    # tenants
    "tenants_pkey": (
        'tenant "{value}" already exists; change it with UPDATE reminderd.tenants (or reminderd tenant set), '
        "or choose another id"
    ),
    "tenant_id_format": (
        "a tenant id is letters, digits and _ . : -, starting with a letter or digit, at most 128"
    ),
    "tenant_callback_url_is_http": "a tenant's callback URL must be an http:// or https:// URL",
    "tenant_calendar_format": _CALENDAR,
    "tenant_holiday_rule_is_known": "a holiday rule is skip or send",
    "quiet_hours_complete": "quiet hours need a start and an end that differ, e.g. 21:00-09:00",
    # tenant_members, tenant_holidays
    "tenant_members_pkey": 'role and tenant "{value}" are already mapped',
    "tenant_members_tenant_id_fkey": 'unknown tenant "{value}"',
    "tenant_holidays_pkey": 'the holiday "{value}" already exists',
    "tenant_holidays_tenant_id_fkey": 'unknown tenant "{value}"',
    "holiday_name_not_empty": "a holiday needs a name",
    # scheduled_messages
    "scheduled_messages_pkey": "a message with id {value} already exists",
    "scheduled_messages_tenant_id_fkey": 'unknown tenant "{value}"',
    "scheduled_messages_live_ref": (
        'message "{value}" is already scheduled: schedule it with reminderd.schedule() (or reminderd '
        "schedule), which replaces the live one, or cancel it first"
    ),
    "ref_id_not_empty": "the message's ref is empty: name it, e.g. booking:b7d2:24h",
    "callback_url_is_http": "a callback URL must be an http:// or https:// URL",
    "cron_shape": "a cron has five fields (minute hour day month weekday), six with seconds first, or is @daily"
                  " and the like",
    "status_is_known": (
        "unknown status: pending, picked, sent, dead, cancelled, paused, expired, finished or awaiting_approval"
    ),
    "max_attempts_positive": "max_attempts must be at least 1",
    "paused_by_is_known": "paused_by is message, tenant or endpoint",
    "rrule_has_freq": "an RRULE needs FREQ=, e.g. FREQ=WEEKLY;BYDAY=MO",
    "max_runs_positive": "max_runs must be at least 1",
    "category_format": "a category is lower-case letters, digits, _ and -, like marketing",
    "calendar_format": _CALENDAR,
    "holiday_rule_is_known": "a holiday rule is skip or send",
    "backfill_is_known": "a backfill policy is send, latest or skip",
    "max_lateness_not_negative": "max_lateness cannot be negative",
    "one_off_needs_fire_at": "a one-off message needs a fire_at (or give it a cron or an rrule)",
    "one_recurrence": "a message recurs by cron or by rrule, not both",
    "end_conditions_need_recurrence": "until and max_runs end a recurring message: give it a cron or an rrule",
    "scheduled_messages_live_extra": (
        "message {value} already has an extra occurrence waiting to be sent now: send_now returns that one"
    ),
    # tenants, api_keys, idempotency_keys (the HTTP API's, migration 0006)
    "api_rate_limit_positive": "an API rate limit is a whole number of requests per second, at least 1",
    "api_keys_pkey": "an API key with id {value} already exists",
    "api_keys_prefix": 'the API key prefix "{value}" is taken: create the key again (a new prefix is drawn)',
    "api_key_prefix_format": "an API key prefix is rk_ and 12 characters, as `reminderd api-key list` shows",
    "api_key_hash_is_sha256": "an API key is stored as its SHA-256 (32 bytes), never as the key",
    "api_keys_tenant_id_fkey": 'unknown tenant "{value}"',
    "api_key_name_format": "an API key's name says what uses it, e.g. booking-service (1 to 100 characters)",
    "api_key_scopes_known": "an API key's scopes are read, or read and write",
    "idempotency_keys_pkey": 'the Idempotency-Key "{value}" is already stored',
    "idempotency_key_format": "an Idempotency-Key is 1 to 255 printable ASCII characters",
    "idempotency_keys_tenant_id_fkey": 'unknown tenant "{value}"',
    # dashboard_signouts (the dashboard's sign-outs, migration 0020): the nonce never in a sentence
    "dashboard_signouts_pkey": "that dashboard session is signed out already",
    "dashboard_signout_nonce_format": (
        "a dashboard session's nonce is 22 base64url characters, as reminderd/sessions.py draws it"
    ),
    "dashboard_signouts_key_id_fkey": "unknown API key id {value}: sign in again",
    # deliveries, events, config
    "deliveries_pkey": "a delivery with id {value} already exists",
    "events_pkey": "an event with id {value} already exists",
    "config_pkey": 'the setting "{value}" already exists: UPDATE reminderd.config to change it',
    # daemons (the registry, migration 0008): each daemon draws a random id at start
    "daemons_pkey": "a daemon with id {value} is already registered",
    # tenants and scheduled_messages: audiences (migration 0009, docs/audiences.md)
    "broadcast_limit_positive": "a broadcast limit is a whole number of contacts, at least 1",
    "approval_threshold_not_negative": "an approval threshold is a number of contacts, 0 or more",
    "timezone_source_is_known": "a message's timezone_source is message, contact, phone, country or tenant",
    "zone_from_contact_needs_contact": (
        "a message whose zone comes from a contact names it: give it a contact_id, or timezone_source message"
    ),
    # the reference data, loaded by reminderd migrate (reminderd/phones.py)
    "reference_versions_pkey": 'the reference data of "{value}" is already recorded',
    "phone_plans_pkey": "the numbering plan of +{value} is already loaded",
    "phone_regions_pkey": "region {value} of that calling code is already loaded",
    "phone_prefixes_pkey": "the phone prefix {value} is already loaded",
    "phone_timezones_pkey": "the zones of phone prefix {value} are already loaded",
    "countries_pkey": 'the country "{value}" is already loaded',
    "holiday_calendars_pkey": 'the holiday calendar "{value}" is already loaded',
    # contacts and audiences
    "contacts_pkey": 'contact "{value}" already exists: reminderd.upsert_contacts changes it',
    "contacts_tenant_id_fkey": 'unknown tenant "{value}"',
    "contact_id_format": (
        "a contact id is letters, digits and _ . : @ + -, starting with a letter or digit, at most 128"
    ),
    "phone_length": "a phone number is at most 250 characters",
    "contact_country_format": (
        "a contact's country is an ISO 3166 code of two capital letters, such as GB or IN"
    ),
    "attributes_is_object": 'a contact\'s attributes are a JSON object, like {{"name": "Ann"}}',
    "contact_timezone_source_is_known": "a contact's timezone_source is contact, phone or country",
    "resolved_with_source": "a contact's resolved timezone and its source are set together, or neither",
    "audiences_pkey": (
        'the audience "{value}" already exists: add contacts to it with reminderd.add_to_audience'
    ),
    "audiences_tenant_id_fkey": 'unknown tenant "{value}"',
    "audience_name_format": (
        "an audience's name is letters, digits and _ . : -, starting with a letter or digit, at most 128"
    ),
    "audience_members_pkey": 'contact "{value}" is already in that audience',
    "audience_members_tenant_id_audience_fkey": (
        'unknown audience "{value}": reminderd.add_to_audience creates it'
    ),
    "audience_members_tenant_id_contact_id_fkey": (
        'unknown contact "{value}": add it with reminderd.upsert_contacts'
    ),
    # broadcasts
    "broadcast_requests_pkey": "a broadcast with id {value} already exists",
    "broadcast_requests_tenant_id_fkey": 'unknown tenant "{value}"',
    "ref_prefix_format": "a broadcast's ref prefix is 1 to 100 characters without spaces, % or #",
    "broadcast_callback_url_is_http": "a broadcast's callback URL must be an http:// or https:// URL",
    "broadcast_category_format": "a category is lower-case letters, digits, _ and -, like marketing",
    "stage_ahead_positive": "stage_ahead must be a positive interval, e.g. 1 hour",
    "approval_is_known": "a broadcast's approval is not_needed, awaiting, approved, rejected or cancelled",
    "one_audience": "a broadcast reaches exactly one of: a named audience, a list of contact_ids, everyone",
    "one_when": "a broadcast has exactly one of local_time, cron and rrule",
    "broadcast_occurrences_pkey": "that occurrence of broadcast {value} is already staged",
    "broadcast_occurrences_broadcast_fkey": "tenant and broadcast {value}: the tenant has no such broadcast",
    "broadcast_requests_tenant": "a broadcast of tenant and id {value} already exists",
    # the dashboard's aggregates (migration 0011): kept by triggers, one row per period and tenant
    "fire_counts_pkey": 'the fire counts of "{value}" already exist: the trigger adds to them',
    "fire_counts_period_is_known": "a count's period is minute or hour",
    "lateness_counts_pkey": 'the lateness counts of "{value}" already exist: the trigger adds to them',
    "lateness_counts_period_is_known": "a count's period is minute or hour",
    # fair and bounded sending (migration 0010)
    "max_per_second_positive": "max_per_second must be at least 1 (or NULL: no limit)",
    "max_per_hour_positive": "max_per_hour must be at least 1 (or NULL: no limit)",
    "frequency_cap_policy_is_known": "a frequency-cap policy is defer or skip",
    "recipient_format": "a recipient is not empty and at most 256 characters",
    "tenant_budgets_pkey": 'tenant "{value}" already has a sending budget',
    "tenant_budgets_tenant_id_fkey": 'unknown tenant "{value}"',
    "endpoints_pkey": 'the endpoint "{value}" already exists: reminderd endpoint set changes its limits',
    "endpoint_format": "an endpoint is host:port, e.g. hooks.example.com:443",
    "max_in_flight_positive": "max_in_flight must be at least 1 (or NULL: each daemon's REMINDERD_CONCURRENCY)",
    "endpoint_max_per_second_positive": "an endpoint's max_per_second must be at least 1 (or NULL: no limit)",
    "endpoint_health_pkey": 'the health of endpoint "{value}" is already recorded',
    "endpoint_health_tenant_id_fkey": 'unknown tenant "{value}"',
    "frequency_caps_pkey": 'tenant and category "{value}" already have a frequency cap: update it instead',
    "frequency_caps_tenant_id_fkey": 'unknown tenant "{value}"',
    "frequency_cap_category_format": "a category is lower-case letters, digits, _ and -, like marketing",
    "max_messages_positive": "a frequency cap allows at least 1 message",
    "per_in_range": "a frequency cap's window is more than 0 and at most 366 days",
    "contact_sends_pkey": 'the send "{value}" is already reserved',
    "usage_days_pkey": 'the usage of "{value}" is already counted: add to it',
    "usage_increments_pkey": "a usage increment with id {value} already exists",
    "usage_increments_not_negative": "usage only grows: its counts are 0 or more",
    "usage_days_not_negative": "usage only grows: its counts are 0 or more",
}

# PostgreSQL's own constraint errors say which row in their DETAIL; reminderd's triggers do not.
_POSTGRES_DETAIL = re.compile(r"^(Key \(|Failing row contains)")
_KEY = re.compile(r"^Key \((?P<columns>.*?)\)=\((?P<values>.*)\) (?:already exists|is not present)")


def one_line(refused: DatabaseRefused) -> str:
    """The refusal in a sentence, then its hint: 'unknown tenant "acme"; create it first …'."""
    template = CONSTRAINTS.get(refused.constraint or "")
    if template is not None and _POSTGRES_DETAIL.match(refused.detail or ""):
        return template.format(value=_values(refused.detail or ""))
    hint = _clause(refused.hint)
    return f"{refused.message}; {hint}" if hint else refused.message


def _values(detail: str) -> str:
    match = _KEY.match(detail)
    if match is None:
        return "?"
    return " / ".join(value.strip() for value in match.group("values").split(","))


def _clause(hint: str | None) -> str | None:
    """A HINT as the second half of a line: its first line, lower-case first, no full stop."""
    if not hint or not hint.strip():
        return None
    line = hint.strip().splitlines()[0].rstrip(".")
    return line[:1].lower() + line[1:]


def unknown_tenant(tenant_id: str) -> str:
    """What reminderd.check_tenant() says (23503 and its hint), for a command that reads a tenant's
    rows: an unknown tenant is a typo or the wrong role, never an empty answer."""
    return (f'unknown tenant "{tenant_id}"; '
            "create it first (reminderd tenant add), and check this role acts for it")
