"""The reminderd tables described with SQLAlchemy Core, for Alembic's comparisons.

The migrations in migrations/versions are the source of truth and are written as SQL a DBA can
read; tests check that this description matches what they create.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    ForeignKey,
    Identity,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, INTERVAL, JSONB, TIME, TIMESTAMP

metadata = MetaData(schema="reminderd")

NAME = String  # PostgreSQL's `name` (role names), which SQLAlchemy reflects as a string

TIMESTAMPTZ = TIMESTAMP(timezone=True)

tenants = Table(
    "tenants",
    metadata,
    Column("id", Text, primary_key=True),
    Column("callback_url", Text),
    Column("signing_secret", Text, nullable=False, server_default=text("reminderd.generate_secret()")),
    Column("created_at", TIMESTAMPTZ, nullable=False, server_default=text("now()")),
    Column("previous_signing_secret", Text),
    Column("previous_secret_expires_at", TIMESTAMPTZ),
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    Column("calendar", Text),
    Column("holiday_rule", Text, nullable=False, server_default=text("'skip'::text")),
    Column("quiet_start", TIME),
    Column("quiet_end", TIME),
    Column("quiet_exempt", ARRAY(Text), nullable=False, server_default=text("'{transactional}'::text[]")),
)

scheduled_messages = Table(
    "scheduled_messages",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("tenant_id", Text, ForeignKey("reminderd.tenants.id"), nullable=False),
    Column("ref_id", Text, nullable=False),
    Column("payload", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("callback_url", Text),
    Column("fire_at", TIMESTAMPTZ),
    Column("cron", Text),
    Column("timezone", Text, nullable=False, server_default=text("'UTC'::text")),
    Column("status", Text, nullable=False, server_default=text("'pending'::text")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("max_attempts", Integer),
    Column("last_error", Text),
    Column("created_at", TIMESTAMPTZ, nullable=False, server_default=text("now()")),
    Column("updated_at", TIMESTAMPTZ, nullable=False, server_default=text("now()")),
    Column("picked_at", TIMESTAMPTZ),
    Column("sent_at", TIMESTAMPTZ),
    Column("lease_expires_at", TIMESTAMPTZ),
    Column("scheduled_for", TIMESTAMPTZ),
    Column("last_event", Text),
    Column("paused_by", Text),
    Column("rrule", Text),
    Column("until", TIMESTAMPTZ),
    Column("max_runs", Integer),
    Column("runs", Integer, nullable=False, server_default=text("0")),
    Column("category", Text, nullable=False, server_default=text("'transactional'::text")),
    Column("calendar", Text),
    Column("holiday_rule", Text),
    Column("backfill", Text),
    Column("max_lateness", INTERVAL),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column(
        "message_id",
        BigInteger,
        ForeignKey("reminderd.scheduled_messages.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("tenant_id", Text, nullable=False),
    Column("webhook_id", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("scheduled_for", TIMESTAMPTZ, nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    Column("duration_ms", Integer, nullable=False),
    Column("created_at", TIMESTAMPTZ, nullable=False, server_default=text("now()")),
)

tenant_members = Table(
    "tenant_members",
    metadata,
    Column("role_name", NAME, primary_key=True),
    Column("tenant_id", Text, ForeignKey("reminderd.tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("created_at", TIMESTAMPTZ, nullable=False, server_default=text("now()")),
)

events = Table(
    "events",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("message_id", BigInteger, nullable=False),
    Column("tenant_id", Text, nullable=False),
    Column("ref_id", Text, nullable=False),
    Column("event", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("fire_at", TIMESTAMPTZ),
    Column("reason", Text),
    Column("actor", NAME, nullable=False),
    Column("created_at", TIMESTAMPTZ, nullable=False, server_default=text("now()")),
)

tenant_holidays = Table(
    "tenant_holidays",
    metadata,
    Column("tenant_id", Text, ForeignKey("reminderd.tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("name", Text, nullable=False, server_default=text("'holiday'::text")),
)

config = Table(
    "config",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)
