"""The command-line options several subcommands share (`schedule`, `preview`, `broadcast`), added
to their parsers by reminderd/cli.py and reminderd/audience_commands.py. Building the parser
imports only this, not the requests the options are read into (reminderd/arguments.py): what
`reminderd run` never needs stays out of its start-up."""

from __future__ import annotations

import argparse

from .schedule import BACKFILL_POLICIES


def add_schedule_options(parser: argparse.ArgumentParser) -> None:
    """The options of `reminderd schedule` beyond the when."""
    parser.add_argument("--tz", help="the recipient's IANA timezone: recurrences, offset-less --at, "
                                     "holidays and quiet hours are read in it (default UTC, or the contact's)")
    parser.add_argument("--contact", metavar="ID", help="the contact it is for: without --tz its zone is the "
                                                        "contact's (timezone, phone, country, else the "
                                                        "tenant's)")
    parser.add_argument("--payload", metavar="JSON", help="JSON payload sent in the callback, as written; "
                                                          "@FILE reads it from a file, - from stdin")
    parser.add_argument("--callback-url", help="override the tenant's callback URL")
    parser.add_argument("--until", help="recurring: no occurrence after this (ISO-8601; offset-less in --tz)")
    parser.add_argument("--max-runs", type=int, help="recurring: finish after this many occurrences fired")
    parser.add_argument("--category", default="transactional",
                        help="transactional (default; exempt from quiet hours) or e.g. marketing")
    parser.add_argument("--calendar", help="holiday calendar, e.g. IN, GB, US-CA (default: the tenant's)")
    parser.add_argument("--holiday-rule", choices=("skip", "send"), help="on a holiday (default: the tenant's)")
    parser.add_argument("--backfill", choices=BACKFILL_POLICIES,
                        help="after an outage (default: $REMINDERD_BACKFILL, send)")
    parser.add_argument("--max-lateness", help="how late it may still be sent, e.g. 30m "
                                               "(default: $REMINDERD_MAX_LATENESS)")


def add_recurrence_options(group: argparse._MutuallyExclusiveGroup) -> None:
    group.add_argument("--cron", help='cron: 5 fields, or 6 with leading seconds ("0 0 9 * * MON-FRI")')
    group.add_argument("--every", metavar="PHRASE", help='a phrase such as "weekdays at 09:15"')
    group.add_argument("--rrule", help='RFC 5545, e.g. "FREQ=MONTHLY;BYDAY=1MO;BYHOUR=9;BYMINUTE=0" '
                                       "(EXDATE/DTSTART lines separated by \\n)")
