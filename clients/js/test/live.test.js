// The SDK against a real `reminderd serve` and PostgreSQL. tests/acceptance/test_js_sdk.py starts
// them and runs this file with:
//   SDK_TEST_BASE_URL   the server
//   SDK_TEST_KEYS       a JSON array of API keys, each of a tenant of its own (one per test)
//   SDK_TEST_READ_ONLY_KEY, SDK_TEST_SLOW_KEY (a tenant limited to 1 request/s)
// Without them every test is skipped, and the Python side fails on any skip.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";

import { ApiError, Reminderd } from "../src/index.js";

const BASE_URL = process.env.SDK_TEST_BASE_URL;
const KEYS = JSON.parse(process.env.SDK_TEST_KEYS ?? "[]");
const skip = BASE_URL ? false : "needs a live server: run tests/acceptance/test_js_sdk.py";
const FAST = { attempts: 4, baseMs: 5, capMs: 20 };

function client(options = {}) {
  const apiKey = KEYS.shift();
  assert.ok(apiKey, "out of API keys: SDK_TEST_KEYS needs one per test");
  return new Reminderd({ baseUrl: BASE_URL, apiKey, retry: FAST, ...options });
}

const hoursFromNow = (hours) => new Date(Date.now() + hours * 3600_000);

async function all(iterable) {
  const out = [];
  for await (const item of iterable) out.push(item);
  return out;
}

test("the one-liner: schedule({ refId, fireAt, payload })", { skip }, async () => {
  const rd = client();
  const fireAt = new Date(Math.floor(Date.now() / 1000) * 1000 + 3600_000);
  const payload = { customerId: "c_42", message: "Your table is booked for 19:30", snake_case: true };
  const scheduled = await rd.schedule({ refId: "booking:b7d2:24h", fireAt, payload });
  assert.equal(scheduled.status, "pending");
  assert.equal(scheduled.refId, "booking:b7d2:24h");
  assert.equal(scheduled.result, "created");
  assert.equal(new Date(scheduled.fireAt).getTime(), fireAt.getTime());
  const again = await rd.schedule({ refId: "booking:b7d2:24h", fireAt, payload });
  assert.deepEqual([again.id, again.result], [scheduled.id, "unchanged"]);
  const message = await rd.get(scheduled.id);
  assert.deepEqual(message.payload, payload); // the user's own keys, as written
  assert.equal(message.extraOf, null);
  assert.equal(message.maxAttempts, null);
  assert.deepEqual(message.events.map((e) => e.event), ["created"]);
  assert.ok(Date.parse(message.createdAt) > 0);
});

test("every way to say when, with the options", { skip }, async () => {
  const rd = client();
  const inTwoHours = await rd.schedule({ refId: "when:in", fireIn: "2h" });
  assert.ok(Math.abs(Date.parse(inTwoHours.fireAt) - hoursFromNow(2).getTime()) < 10_000);
  const cron = await rd.schedule({ refId: "when:cron", cron: "0 9 * * 1-5", timezone: "Asia/Kolkata", maxRuns: 3 });
  assert.match(cron.description, /Monday through Friday/);
  const every = await rd.schedule({ refId: "when:every", every: "weekdays at 09:15", timezone: "Europe/London" });
  assert.match(every.description, /09:15/);
  const rrule = await rd.schedule({
    refId: "when:rrule", rrule: "FREQ=MONTHLY;BYDAY=1MO;BYHOUR=9", timezone: "Europe/London",
    calendar: "GB", holidayRule: "skip", backfill: "latest", maxLateness: "1h", category: "reminders",
  });
  const message = await rd.get(rrule.id);
  assert.deepEqual([message.calendar, message.holidayRule, message.backfill, message.maxLatenessS, message.category],
    ["GB", "skip", "latest", 3600, "reminders"]);
});

test("scheduleMany: all at once, or each on its own", { skip }, async () => {
  const rd = client();
  const batch = await rd.scheduleMany([1, 2, 3].map((i) => ({ refId: `batch:${i}`, fireIn: `${i}h`, payload: { i } })));
  assert.deepEqual([batch.created, batch.failed], [3, 0]);
  assert.deepEqual(batch.results.map((r) => r.refId), ["batch:1", "batch:2", "batch:3"]);
  await assert.rejects(rd.scheduleMany([{ refId: "ok", fireIn: "1h" }, { refId: "bad", fireIn: "soon" }]), (error) => {
    assert.ok(error instanceof ApiError);
    assert.equal(error.status, 422);
    assert.deepEqual(error.errors.map((e) => e.pointer), ["/messages/1/fire_in"]);
    return true;
  });
  const partial = await rd.scheduleMany([{ refId: "ok", fireIn: "1h" }, { refId: "bad", fireIn: "soon" }], { atomic: false });
  assert.deepEqual([partial.created, partial.failed], [1, 1]);
  assert.equal(partial.results[1].error.errors[0].pointer, "/messages/1/fire_in");
  const live = await all(rd.list({ status: ["pending"] }).messages());
  assert.deepEqual(live.map((m) => m.refId).sort(), ["batch:1", "batch:2", "batch:3", "ok"]);
});

test("list walks every page, newest or soonest first, with filters and a kept cursor", { skip }, async () => {
  const rd = client();
  const ids = [];
  for (let i = 1; i <= 7; i++) ids.push((await rd.schedule({ refId: `page:${i}`, fireIn: `${i}h` })).id);
  await rd.schedule({ refId: "other", fireIn: "1h" });
  const pages = await all(rd.list({ refPrefix: "page:", pageSize: 3 }));
  assert.deepEqual(pages.map((p) => p.messages.length), [3, 3, 1]);
  assert.deepEqual(pages.flatMap((p) => p.messages.map((m) => m.id)), [...ids].reverse());
  assert.equal(pages.at(-1).nextCursor, null);
  const soonest = await all(rd.list({ refPrefix: "page:", order: "soonest", pageSize: 2 }).messages());
  assert.deepEqual(soonest.map((m) => m.refId), [1, 2, 3, 4, 5, 6, 7].map((i) => `page:${i}`));
  const rest = await all(rd.list({ refPrefix: "page:", pageSize: 3, cursor: pages[0].nextCursor }).messages());
  assert.deepEqual(rest.map((m) => m.id), [...ids].reverse().slice(3));
  const window = await all(rd.list({ fireAfter: hoursFromNow(4.5), fireBefore: hoursFromNow(6.5) }).messages());
  assert.deepEqual(window.map((m) => m.refId), ["page:6", "page:5"]);
});

test("cancel by id, by ref and by pattern count what they cancel", { skip }, async () => {
  const rd = client();
  const one = await rd.schedule({ refId: "booking:b7d2:24h", fireIn: "24h" });
  await rd.schedule({ refId: "booking:b7d2:1h", fireIn: "1h" });
  await rd.schedule({ refId: "booking:b7d2:15m", fireIn: "15m" });
  await rd.schedule({ refId: "booking:c9:1h", fireIn: "1h" });
  assert.equal(await rd.cancel(one.id), 1);
  assert.equal(await rd.cancel(one.id), 0);
  assert.equal(await rd.cancelRef("booking:b7d2:1h"), 1);
  assert.equal(await rd.cancelMatching("booking:b7d2:%"), 1);
  const live = await all(rd.list({ status: ["pending"] }).messages());
  assert.deepEqual(live.map((m) => m.refId), ["booking:c9:1h"]);
});

test("update, reschedule, pause, resume, sendNow and requeue", { skip }, async () => {
  const rd = client();
  const { id } = await rd.schedule({ refId: "life", fireIn: "3h", payload: { v: 1 } });
  const when = new Date(Math.floor(Date.now() / 60_000) * 60_000 + 10 * 86400_000);
  const moved = await rd.reschedule(id, { fireAt: when });
  assert.equal(Date.parse(moved.fireAt), when.getTime());
  const edited = await rd.update(id, { payload: { v: 2 } });
  assert.deepEqual(edited.payload, { v: 2 });
  assert.equal((await rd.pause(id)).status, "paused");
  assert.equal((await rd.resume(id)).status, "pending");
  const now = await rd.sendNow(id);
  assert.deepEqual([now.id, now.extraOccurrence, now.held], [id, false, null]);
  await assert.rejects(rd.requeue(id), (error) => error.status === 409 && error.type === "urn:reminderd:problem:not-live");
  const recurring = await rd.schedule({ refId: "pulse", cron: "0 9 * * *" });
  const extra = await rd.sendNow(recurring.id);
  assert.ok(extra.extraOccurrence && extra.id !== recurring.id);
  assert.equal((await rd.get(extra.id)).extraOf, recurring.id);
});

test("the tenant: settings, pause and resume, a new secret, stats, preview", { skip }, async () => {
  const rd = client();
  const tenant = await rd.tenant();
  assert.equal(tenant.paused, false);
  const changed = await rd.updateTenant({ quietHours: "21:00-08:00", calendar: "IN", quietExempt: ["otp"] });
  assert.deepEqual([changed.quietHours, changed.calendar, changed.quietExempt], ["21:00-08:00", "IN", ["otp"]]);
  const cleared = await rd.updateTenant({ quietHours: null, calendar: null });
  assert.deepEqual([cleared.quietHours, cleared.calendar], [null, null]);
  await rd.schedule({ refId: "t:1", fireIn: "1h" });
  await rd.schedule({ refId: "t:2", fireIn: "2h" });
  assert.deepEqual(await rd.pauseTenant(), { paused: true, messages: 2 });
  assert.deepEqual(await rd.resumeTenant(), { paused: false, messages: 2 });
  const rotated = await rd.rotateSecret({ grace: "1h" });
  assert.match(rotated.secret, /^whsec_/);
  assert.ok("previousSecretValidUntil" in rotated);
  const stats = await rd.stats();
  assert.equal(stats.counts.pending, 2);
  assert.equal(stats.last24h.delivered, 0);
  assert.equal(stats.upcomingByHour.reduce((sum, h) => sum + h.messages, 0), 2);
  const preview = await rd.preview({ cron: "0 9 * * 1-5", timezone: "Asia/Kolkata", n: 3, from: new Date("2026-12-24T00:00:00Z") });
  assert.deepEqual(preview.fires.map((f) => f.utc), ["2026-12-24T03:30:00Z", "2026-12-25T03:30:00Z", "2026-12-28T03:30:00Z"]);
});

test("refusals are ApiErrors carrying the problem", { skip }, async () => {
  const rd = client();
  await assert.rejects(rd.schedule({ refId: "bad", fireIn: "1h", cron: "0 9 * * *" }), (error) => {
    assert.equal(error.type, "urn:reminderd:problem:invalid-request");
    assert.equal(error.status, 422);
    assert.equal(error.detail, "give only one of fire_in, cron");
    assert.equal(error.errors[0].pointer, "/cron"); // the wire's name: problems are passed as written
    assert.ok(error.problem.instance);
    return true;
  });
  await assert.rejects(rd.get(987654321), (error) => error.status === 404 && error.type === "urn:reminderd:problem:not-found");
  const wrong = new Reminderd({ baseUrl: BASE_URL, apiKey: "rk_aaaaaaaaaaaa_" + "A".repeat(43) });
  await assert.rejects(wrong.tenant(), (error) => error.status === 401 && error.attempts === 1);
  const reader = new Reminderd({ baseUrl: BASE_URL, apiKey: process.env.SDK_TEST_READ_ONLY_KEY });
  assert.equal(typeof (await reader.tenant()).id, "string");
  await assert.rejects(reader.schedule({ refId: "no", fireIn: "1h" }), (error) => error.status === 403);
});

test("the same Idempotency-Key for another request is refused", { skip }, async () => {
  const rd = client();
  const first = await rd.schedule({ refId: "idem:1", fireIn: "1h" }, { idempotencyKey: "order-7" });
  assert.deepEqual(await rd.schedule({ refId: "idem:1", fireIn: "1h" }, { idempotencyKey: "order-7" }), first);
  await assert.rejects(rd.schedule({ refId: "idem:2", fireIn: "1h" }, { idempotencyKey: "order-7" }),
    (error) => error.status === 422 && error.type === "urn:reminderd:problem:idempotency-mismatch");
});

// A proxy in front of the real server that fails as its script says: [status, headers] answered
// without forwarding, or "cut" (forward, then drop the connection: the server committed, the client
// never hears it).
let proxy;
before(async () => {
  if (skip) return;
  proxy = { script: [], requests: [], upstream: [] };
  proxy.server = createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    proxy.requests.push(req.headers);
    const step = proxy.script.shift();
    if (Array.isArray(step)) {
      const [status, headers] = step;
      res.writeHead(status, { "content-type": "application/problem+json", ...headers });
      return res.end(JSON.stringify({ type: "about:blank", title: "proxy says no", status, detail: "scripted" }));
    }
    const forwarded = Object.fromEntries(Object.entries(req.headers)
      .filter(([name]) => ["authorization", "content-type", "idempotency-key", "accept"].includes(name)));
    const answer = await fetch(BASE_URL + req.url, { method: req.method, headers: forwarded, body: chunks.length ? Buffer.concat(chunks) : undefined });
    const text = await answer.text();
    proxy.upstream.push({ status: answer.status, replayed: answer.headers.get("idempotent-replayed") });
    if (step === "cut") return req.socket.destroy();
    res.writeHead(answer.status, { "content-type": answer.headers.get("content-type") ?? "application/json" });
    res.end(text);
  });
  await new Promise((resolve) => proxy.server.listen(0, "127.0.0.1", resolve));
  proxy.url = `http://127.0.0.1:${proxy.server.address().port}`;
});
after(() => proxy?.server.close());

for (const [name, script] of [
  ["503 twice", [[503, {}], [503, {}]]],
  ["429 with Retry-After", [[429, { "retry-after": "1" }]]],
  ["502, 500, 504", [[502, {}], [500, {}], [504, {}]]],
]) {
  test(`through ${name} a schedule is retried and creates exactly one message`, { skip }, async () => {
    proxy.script = structuredClone(script);
    proxy.requests = [];
    const rd = client({ baseUrl: proxy.url });
    const scheduled = await rd.schedule({ refId: "retried", fireIn: "1h" });
    assert.equal(scheduled.result, "created");
    assert.equal(proxy.requests.length, script.length + 1);
    assert.equal(new Set(proxy.requests.map((h) => h["idempotency-key"])).size, 1);
    const found = await all(rd.list({ ref: "retried" }).messages());
    assert.deepEqual(found.map((m) => m.id), [scheduled.id]);
  });
}

test("a connection cut after the server committed is retried and answered with the first answer", { skip }, async () => {
  proxy.script = ["cut"];
  proxy.requests = [];
  proxy.upstream = [];
  const rd = client({ baseUrl: proxy.url });
  const scheduled = await rd.schedule({ refId: "cut", fireIn: "1h", payload: { n: 1 } });
  assert.deepEqual(proxy.upstream, [{ status: 201, replayed: null }, { status: 201, replayed: "true" }]);
  assert.equal(proxy.requests[0]["idempotency-key"], proxy.requests[1]["idempotency-key"]);
  const found = await all(rd.list({ ref: "cut" }).messages());
  assert.deepEqual(found.map((m) => m.id), [scheduled.id]);
});

test("the server's own rate limit is waited out", { skip }, async () => {
  const rd = new Reminderd({ baseUrl: BASE_URL, apiKey: process.env.SDK_TEST_SLOW_KEY, retry: { attempts: 5, baseMs: 50 } });
  const created = await Promise.all([0, 1, 2].map((i) => rd.schedule({ refId: `limited:${i}`, fireIn: "1h" })));
  assert.deepEqual(created.map((c) => c.result), ["created", "created", "created"]);
});
