"""reminderd.refusals: the database's refusals as one line for a person."""

from __future__ import annotations

from reminderd.exceptions import DatabaseRefused
from reminderd.refusals import one_line


def test_a_sentence_from_a_trigger_is_kept_and_its_hint_follows() -> None:
    refused = DatabaseRefused(
        'tenant "acme" already exists', sqlstate="23505", constraint="tenants_pkey",
        hint="Change it with UPDATE reminderd.tenants (or reminderd tenant set), or choose another id.",
    )
    assert one_line(refused) == (
        'tenant "acme" already exists; change it with UPDATE reminderd.tenants (or reminderd tenant set), '
        "or choose another id"
    )


def test_postgresqls_own_words_for_a_constraint_become_a_sentence() -> None:
    duplicate = DatabaseRefused(
        'duplicate key value violates unique constraint "tenants_pkey"', sqlstate="23505",
        constraint="tenants_pkey", detail="Key (id)=(acme) already exists.",
    )
    assert one_line(duplicate) == (
        'tenant "acme" already exists; change it with UPDATE reminderd.tenants (or reminderd tenant set), '
        "or choose another id"
    )
    live = DatabaseRefused(
        'duplicate key value violates unique constraint "scheduled_messages_live_ref"', sqlstate="23505",
        constraint="scheduled_messages_live_ref",
        detail="Key (tenant_id, ref_id)=(acme, booking:1) already exists.",
    )
    assert one_line(live).startswith('message "acme / booking:1" is already scheduled: ')
    check = DatabaseRefused(
        'new row for relation "scheduled_messages" violates check constraint "category_format"',
        sqlstate="23514", constraint="category_format", detail="Failing row contains (1, acme, …).",
    )
    assert one_line(check) == "a category is lower-case letters, digits, _ and -, like marketing"
    missing = DatabaseRefused(
        'insert or update on table "tenant_holidays" violates foreign key constraint '
        '"tenant_holidays_tenant_id_fkey"', sqlstate="23503", constraint="tenant_holidays_tenant_id_fkey",
        detail='Key (tenant_id)=(ghost) is not present in table "tenants".',
    )
    assert one_line(missing) == 'unknown tenant "ghost"'


def test_a_refusal_without_a_constraint_is_its_message() -> None:
    assert one_line(DatabaseRefused("no message with id 7", sqlstate="P0002")) == "no message with id 7"
