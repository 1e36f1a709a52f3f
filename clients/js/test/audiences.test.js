// The SDK's contacts, audiences, broadcasts and cadences against a real `reminderd serve` and
// PostgreSQL. tests/acceptance/test_js_sdk.py starts them and runs this file with:
//   SDK_TEST_BASE_URL   the server
//   SDK_TEST_KEYS       a JSON array of API keys, each of a tenant of its own (one per test)
//   SDK_TEST_PAIR       two API keys of one more tenant (approval_threshold 2): one creates, one approves
// Without them every test is skipped, and the Python side fails on any skip.
import { test } from "node:test";
import assert from "node:assert/strict";

import { ApiError, Reminderd } from "../src/index.js";

const BASE_URL = process.env.SDK_TEST_BASE_URL;
const KEYS = JSON.parse(process.env.SDK_TEST_KEYS ?? "[]");
const PAIR = JSON.parse(process.env.SDK_TEST_PAIR ?? "[]");
const skip = BASE_URL ? false : "needs a live server: run tests/acceptance/test_js_sdk.py";
const FAST = { attempts: 2, baseMs: 5, capMs: 20 };

function client(apiKey = KEYS.shift()) {
  assert.ok(apiKey, "out of API keys: SDK_TEST_KEYS needs one per test");
  return new Reminderd({ baseUrl: BASE_URL, apiKey, retry: FAST });
}

function wallTime(days, hour = 9) {
  const day = new Date(Date.now() + days * 86400_000).toISOString().slice(0, 10);
  return `${day}T${String(hour).padStart(2, "0")}:00:00`;
}

const CONTACTS = [
  { contactId: "cust:8f@x+1", phone: "+1 312 555 0100", attributes: { first_name: "Ann", plan: { tier_id: 2 } } },
  { contactId: "cust_9a", country: "IN" },
  { contactId: "cust_7c", timezone: "Asia/Tokyo" },
];

test("contacts, their zones, their messages", { skip }, async () => {
  const rd = client();
  const written = await rd.upsertContacts([...CONTACTS, { contactId: "bad", timezone: "Mars/Base" }]);
  assert.deepEqual([written.new, written.failed, written.errors[0].index], [3, 1, 3]);
  assert.match(written.errors[0].error.detail, /Mars\/Base/);
  const ann = await rd.contact("cust:8f@x+1");
  assert.deepEqual([ann.zone, ann.zoneSource, ann.phone], ["America/Chicago", "phone", "+13125550100"]);
  assert.deepEqual(ann.attributes, { first_name: "Ann", plan: { tier_id: 2 } }); // the user's own keys, as written
  const localTime = wallTime(3);
  const scheduled = await rd.schedule({ refId: "renewal:8f", localTime, contactId: "cust:8f@x+1" });
  assert.deepEqual([scheduled.timezone, scheduled.timezoneSource, scheduled.contactId],
    ["America/Chicago", "phone", "cust:8f@x+1"]);
  const picture = await rd.contactMessages("cust:8f@x+1", { recent: "1d" });
  assert.deepEqual(picture.messages.map((m) => [m.refId, m.localFireAt, m.timezoneSource]),
    [["renewal:8f", localTime, "phone"]]);
  assert.equal(await rd.deleteContact("cust_9a"), 1);
  assert.equal(await rd.deleteContact("cust_9a"), 0);
  await assert.rejects(rd.contact("cust_9a"), (error) => error instanceof ApiError && error.status === 404);
});

test("more contacts than one array goes as NDJSON", { skip }, async () => {
  const rd = client();
  const many = Array.from({ length: 10_050 }, (_, n) => ({ contactId: `many_${n}`, country: "GB" }));
  const written = await rd.upsertContacts(many);
  assert.deepEqual([written.received, written.new, written.failed], [10_050, 10_050, 0]);
});

test("audiences", { skip }, async () => {
  const rd = client();
  await rd.upsertContacts(CONTACTS);
  assert.equal(await rd.addToAudience("vip", ["cust:8f@x+1", "cust_7c"]), 2);
  assert.deepEqual((await rd.audiences()).map((a) => [a.name, a.members]), [["vip", 2]]);
  assert.equal(await rd.removeFromAudience("vip", ["cust_7c"]), 1);
  await assert.rejects(rd.addToAudience("vip", ["ghost"]), (error) => error.status === 404 && /ghost/.test(error.detail));
  assert.equal(await rd.dropAudience("vip"), true);
  assert.equal(await rd.dropAudience("vip"), false);
});

test("a broadcast: dry run, staged, listed, cancelled; and a cadence", { skip }, async () => {
  const rd = client();
  await rd.upsertContacts(CONTACTS);
  await rd.addToAudience("all3", CONTACTS.map((c) => c.contactId));
  const request = { refPrefix: "bf", localTime: wallTime(4), audience: "all3", payload: { offer_code: "BF30" } };
  const preview = await rd.broadcastDryRun(request);
  assert.equal(preview.audienceSize, 3);
  assert.equal(preview.sendsPerUtcHour.reduce((sum, hour) => sum + hour.messages, 0), 3);
  const made = await rd.broadcast(request);
  assert.deepEqual([made.counts.staged, made.state, made.waves[0].contacts], [3, "sending", 3]);
  assert.deepEqual((await rd.broadcasts()).map((b) => b.id), [made.id]);
  assert.equal((await rd.getBroadcast(made.id)).counts.waiting, 3);
  const cancelled = await rd.cancelBroadcast(made.id);
  assert.deepEqual([cancelled.cancelledMessages, cancelled.counts.cancelled], [3, 3]);
  const anchor = new Date(Date.now() + 20 * 86400_000).toISOString();
  const cadence = await rd.scheduleCadence({ refPrefix: "renewal_42", anchor, offsets: ["-30d", "-7d"],
    atLocal: "10:00", contactId: "cust_7c" });
  const steps = Object.fromEntries(cadence.steps.map((s) => [s.refId, s]));
  assert.ok(steps["renewal_42:-30d"].skipped);
  assert.match(steps["renewal_42:-7d"].localTime, /T10:00:00$/);
});

test("a big broadcast is approved by another key, never by its own", { skip }, async () => {
  const [alice, bob] = [client(PAIR[0]), client(PAIR[1])];
  await alice.upsertContacts(CONTACTS);
  const big = await alice.broadcast({ refPrefix: "big", localTime: wallTime(5), everyone: true });
  assert.deepEqual([big.approval, big.state], ["awaiting", "awaiting_approval"]);
  await assert.rejects(alice.approveBroadcast(big.id), (error) => error.status === 403 && error.type.endsWith(":forbidden"));
  const approved = await bob.approveBroadcast(big.id, { note: "copy checked" });
  assert.deepEqual([approved.approval, approved.released], ["approved", 3]);
  await assert.rejects(bob.rejectBroadcast(big.id), (error) => error.status === 409);
  const second = await alice.broadcast({ refPrefix: "big2", localTime: wallTime(5), everyone: true });
  const rejected = await bob.rejectBroadcast(second.id, { note: "no" });
  assert.deepEqual([rejected.approval, rejected.cancelledMessages], ["rejected", 3]);
});
