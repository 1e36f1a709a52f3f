"""reminderd.client's recipients methods against a real `reminderd serve` and PostgreSQL: contacts
(a JSON array and, past 10,000, NDJSON), a contact's messages, audiences, broadcasts (dry run,
list, get, approval by another key, reject, cancel), cadences, and contact_id on schedule."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import pytest_asyncio
from live_api import LiveApi, TenantKey

from reminderd import client as sdk
from reminderd.client import ApiError, ReminderdClient, RetryPolicy, Status, SyncReminderdClient
from reminderd.testing import add_api_key

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

FAST = RetryPolicy(attempts=2, base_s=0.01, cap_s=0.05)


@pytest_asyncio.fixture(loop_scope="module")
async def rd(
    live_api: LiveApi, tenant_key: TenantKey, api_db: asyncpg.Connection
) -> AsyncIterator[ReminderdClient]:
    await api_db.execute(
        "UPDATE reminderd.tenants SET timezone = 'Europe/London' WHERE id = $1", tenant_key.tenant
    )
    async with ReminderdClient(live_api.url, tenant_key.key, retry=FAST) as client:
        yield client


def wall(days: int, hour: int = 9) -> datetime:
    day = datetime.now(UTC).date() + timedelta(days=days)
    return datetime(day.year, day.month, day.day, hour)


CONTACTS = [
    {"contact_id": "cust:8f@x+1", "phone": "+1 312 555 0100"},  # an id with : @ + goes in the path as it is
    {"contact_id": "cust_9a", "country": "IN"},
    {"contact_id": "cust_7c", "timezone": "Asia/Tokyo"},
]


async def test_contacts_and_a_contacts_messages(rd: ReminderdClient) -> None:
    written = await rd.upsert_contacts([*CONTACTS, {"contact_id": "bad", "timezone": "Mars/Base"}])
    assert (written.new, written.failed) == (3, 1)
    assert written.errors[0].index == 3 and "Mars/Base" in written.errors[0].error.detail
    contact = await rd.contact("cust:8f@x+1")
    assert (contact.zone, contact.zone_source, contact.phone) == ("America/Chicago", "phone", "+13125550100")
    scheduled = await rd.schedule("renewal:8f", local_time=wall(3), contact_id="cust:8f@x+1")
    assert (scheduled.timezone, scheduled.timezone_source, scheduled.contact_id) == (
        "America/Chicago",
        "phone",
        "cust:8f@x+1",
    )
    detail = await rd.get(scheduled.id)
    assert (detail.contact_id, detail.timezone_source) == ("cust:8f@x+1", "phone")
    batch = await rd.schedule_many(
        [sdk.ScheduleRequest("b:9a", fire_in=timedelta(hours=2), contact_id="cust_9a")]
    )
    assert batch.results[0].timezone == "Asia/Kolkata" and batch.results[0].timezone_source == "country"
    picture = await rd.contact_messages("cust:8f@x+1", recent=timedelta(days=1))
    assert picture.contact.contact_id == "cust:8f@x+1"
    assert [(m.ref_id, m.status, m.local_fire_at) for m in picture.messages] == [
        ("renewal:8f", Status.PENDING, wall(3).isoformat())
    ]
    assert await rd.delete_contact("cust_9a") == 1
    assert await rd.delete_contact("cust_9a") == 0
    with pytest.raises(ApiError) as missing:
        await rd.contact("cust_9a")
    assert missing.value.status == 404


async def test_more_than_an_array_of_contacts_goes_as_ndjson(
    rd: ReminderdClient, api_db: asyncpg.Connection, tenant_key: TenantKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sdk, "CONTACTS_PER_ARRAY", 5)
    written = await rd.upsert_contacts({"contact_id": f"many_{n}", "country": "GB"} for n in range(12))
    assert (written.received, written.new, written.failed) == (12, 12, 0)
    assert (
        await api_db.fetchval("SELECT count(*) FROM reminderd.contacts WHERE tenant_id = $1", tenant_key.tenant)
        == 12
    )


async def test_audiences(rd: ReminderdClient) -> None:
    await rd.upsert_contacts(CONTACTS)
    assert await rd.add_to_audience("vip", ["cust:8f@x+1", "cust_7c"]) == 2
    assert [(a.name, a.members) for a in await rd.audiences()] == [("vip", 2)]
    assert await rd.remove_from_audience("vip", ["cust_7c"]) == 1
    with pytest.raises(ApiError) as unknown:
        await rd.add_to_audience("vip", ["ghost"])
    assert unknown.value.status == 404 and "ghost" in unknown.value.detail
    assert await rd.drop_audience("vip") is True
    assert await rd.drop_audience("vip") is False


async def test_broadcasts_dry_run_approval_and_cancel(
    rd: ReminderdClient, live_api: LiveApi, api_db: asyncpg.Connection, tenant_key: TenantKey
) -> None:
    await rd.upsert_contacts(CONTACTS)
    await rd.add_to_audience("all3", [c["contact_id"] for c in CONTACTS])
    preview = await rd.broadcast_dry_run("bf", local_time=wall(4), audience="all3", payload={"offer": 30})
    assert preview.audience_size == 3 and sum(h.messages for h in preview.sends_per_utc_hour) == 3
    assert {z.timezone for z in preview.zones} == {"America/Chicago", "Asia/Kolkata", "Asia/Tokyo"}
    made = await rd.broadcast("bf", local_time=wall(4), audience="all3", payload={"offer": 30})
    assert made.counts.staged == 3 and made.state == "sending" and made.waves[0].contacts == 3
    assert [b.id for b in await rd.broadcasts()] == [made.id]
    assert (await rd.get_broadcast(made.id)).counts.waiting == 3
    cancelled = await rd.cancel_broadcast(made.id)
    assert cancelled.cancelled_messages == 3 and cancelled.counts.cancelled == 3

    await api_db.execute("UPDATE reminderd.tenants SET approval_threshold = 2 WHERE id = $1", tenant_key.tenant)
    big = await rd.broadcast("big", local_time=wall(5), contact_ids=[c["contact_id"] for c in CONTACTS])
    assert big.approval == "awaiting" and big.state == "awaiting_approval"
    with pytest.raises(ApiError) as own:
        await rd.approve_broadcast(big.id)
    assert own.value.status == 403 and own.value.type == "urn:reminderd:problem:forbidden"
    other_key = await add_api_key(api_db, tenant_key.tenant, name="second-person")
    with SyncReminderdClient(live_api.url, other_key, retry=FAST) as bob:  # the blocking client too
        approved = bob.approve_broadcast(big.id, note="checked")
        assert approved.approval == "approved" and approved.released == 3
        with pytest.raises(ApiError) as decided:
            bob.reject_broadcast(big.id)
        assert decided.value.status == 409
        second = await rd.broadcast("big2", local_time=wall(5), everyone=True)
        rejected = bob.reject_broadcast(second.id, note="no")
        assert rejected.approval == "rejected" and rejected.cancelled_messages == 3


async def test_a_cadence(rd: ReminderdClient) -> None:
    await rd.upsert_contacts(CONTACTS)
    anchor = (datetime.now(UTC) + timedelta(days=20)).replace(hour=0, minute=0, second=0, microsecond=0)
    cadence = await rd.schedule_cadence(
        "renewal_42", anchor, offsets=["-30d", "-7d", "-1d"], at_local="10:00", contact_id="cust_7c"
    )
    steps = {step.ref_id: step for step in cadence.steps}
    assert steps["renewal_42:-30d"].skipped and steps["renewal_42:-30d"].id is None
    assert steps["renewal_42:-7d"].local_time.endswith("T10:00:00") and steps["renewal_42:-7d"].id
