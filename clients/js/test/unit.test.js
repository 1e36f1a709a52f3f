// The SDK without a server: names on the wire, retries and idempotency keys, problems, the key
// kept out of sight. A scripted fetch stands in for the network (test/live.test.js uses the real
// `reminderd serve`).
import { test } from "node:test";
import assert from "node:assert/strict";
import { inspect } from "node:util";

import { ApiError, Reminderd, SecretShownOnceError, camel, fromWire, retryAfterMs, retryDelayMs, snake, toWire } from "../src/index.js";

const KEY = "rk_abcdefghijkm_" + "s3cr3t".repeat(7) + "x";
const FAST = { attempts: 4, baseMs: 1, capMs: 5 };
const SCHEDULED = { id: 1, ref_id: "r", status: "pending", fire_at: "2026-12-24T03:30:00Z", description: "once", result: "created" };

function problem(status, kind, extra = {}) {
  return { type: `urn:reminderd:problem:${kind}`, title: kind, status, detail: `scripted ${kind}`, ...extra };
}

/** A fetch answering from `steps` ({status, headers, body} | "cut"), then 201/200 with `final`. */
function scripted(steps = [], final = SCHEDULED) {
  const seen = [];
  const fetch = async (url, init) => {
    seen.push({ url: new URL(url), ...init, at: performance.now() });
    const step = steps.shift();
    if (step === "cut") throw new TypeError("fetch failed", { cause: { code: "ECONNRESET" } });
    const status = step?.status ?? (init.method === "POST" ? 201 : 200);
    const body = step?.body ?? final;
    const text = typeof body === "string" ? body : JSON.stringify(body);
    return new Response(text, { status, headers: step?.headers ?? {} });
  };
  return { fetch, seen };
}

test("camelCase and snake_case convert both ways, the payload untouched", () => {
  assert.equal(camel("ref_id"), "refId");
  assert.equal(camel("max_lateness_s"), "maxLatenessS");
  assert.equal(camel("last_1h"), "last1h");
  assert.equal(snake("refId"), "ref_id");
  assert.equal(snake("maxLatenessS"), "max_lateness_s");
  const sent = toWire({ refId: "r", fireAt: new Date("2026-12-24T03:30:00Z"), payload: { customerId: 7, nested: { fooBar: 1 } }, cron: undefined });
  assert.deepEqual(sent, { ref_id: "r", fire_at: "2026-12-24T03:30:00.000Z", payload: { customerId: 7, nested: { fooBar: 1 } } });
  const read = fromWire({ ref_id: "r", extra_of: null, payload: { snake_key: 1 }, events: [{ created_at: "x" }] });
  assert.deepEqual(read, { refId: "r", extraOf: null, payload: { snake_key: 1 }, events: [{ createdAt: "x" }] });
});

test("schedule sends the wire's names and answers in camelCase", async () => {
  const { fetch, seen } = scripted();
  const rd = new Reminderd({ baseUrl: "http://127.0.0.1:8080/", apiKey: KEY, fetch });
  const answer = await rd.schedule({ refId: "booking:b7d2:24h", fireAt: "2026-12-24T09:00:00+05:30", payload: { to: "+1" }, maxAttempts: 3 });
  assert.deepEqual(answer, { id: 1, refId: "r", status: "pending", fireAt: "2026-12-24T03:30:00Z", description: "once", result: "created" });
  const [request] = seen;
  assert.equal(request.url.href, "http://127.0.0.1:8080/v1/messages");
  assert.equal(request.method, "POST");
  assert.deepEqual(JSON.parse(request.body), { ref_id: "booking:b7d2:24h", fire_at: "2026-12-24T09:00:00+05:30", payload: { to: "+1" }, max_attempts: 3 });
  assert.equal(request.headers.Authorization, `Bearer ${KEY}`);
  assert.equal(request.headers["Content-Type"], "application/json");
  assert.match(request.headers["Idempotency-Key"], /^rdjs_[0-9a-f-]{36}$/);
});

for (const [name, failure] of [
  ["503", { status: 503, body: problem(503, "unavailable") }],
  ["500", { status: 500, body: problem(500, "internal") }],
  ["a proxy's 502 page", { status: 502, body: "<html>bad gateway</html>" }],
  ["429", { status: 429, headers: { "Retry-After": "0" }, body: problem(429, "rate-limited") }],
  ["409 in flight", { status: 409, body: problem(409, "idempotency-in-flight") }],
  ["a cut connection", "cut"],
]) {
  test(`a write failing with ${name} is retried with the same body and Idempotency-Key`, async () => {
    const { fetch, seen } = scripted([failure, failure]);
    const rd = new Reminderd({ baseUrl: "http://127.0.0.1:8080", apiKey: KEY, fetch, retry: FAST });
    const answer = await rd.schedule({ refId: "r", fireIn: "2h" });
    assert.equal(answer.id, 1);
    assert.equal(seen.length, 3);
    assert.equal(new Set(seen.map((s) => s.headers["Idempotency-Key"])).size, 1);
    assert.equal(new Set(seen.map((s) => s.body)).size, 1);
  });
}

test("each call has its own key; a key given is sent as given; reads carry none", async () => {
  const { fetch, seen } = scripted();
  const rd = new Reminderd({ baseUrl: "http://127.0.0.1:8080", apiKey: KEY, fetch });
  await rd.schedule({ refId: "a", fireIn: 60 });
  await rd.schedule({ refId: "a", fireIn: 60 });
  await rd.schedule({ refId: "a", fireIn: 60 }, { idempotencyKey: "order-42:reminder" });
  await rd.get(1);
  const keys = seen.map((s) => s.headers["Idempotency-Key"]);
  assert.notEqual(keys[0], keys[1]);
  assert.equal(keys[2], "order-42:reminder");
  assert.equal(keys[3], undefined);
});

test("Retry-After is waited for", async () => {
  const { fetch, seen } = scripted([{ status: 429, headers: { "Retry-After": "1" }, body: problem(429, "rate-limited") }]);
  const rd = new Reminderd({ baseUrl: "http://127.0.0.1:8080", apiKey: KEY, fetch, retry: FAST });
  await rd.schedule({ refId: "r", fireIn: 60 });
  assert.ok(seen[1].at - seen[0].at >= 950, `waited ${seen[1].at - seen[0].at} ms`);
});

test("a Retry-After longer than the policy allows fails at once", async () => {
  const { fetch, seen } = scripted([{ status: 429, headers: { "Retry-After": "3600" }, body: problem(429, "rate-limited") }]);
  const rd = new Reminderd({ baseUrl: "http://127.0.0.1:8080", apiKey: KEY, fetch });
  await assert.rejects(rd.schedule({ refId: "r", fireIn: 60 }), (error) => error.status === 429 && error.attempts === 1);
  assert.equal(seen.length, 1);
});

test("out of attempts, the last problem is raised", async () => {
  const failures = Array.from({ length: 5 }, () => ({ status: 503, body: problem(503, "unavailable") }));
  const { fetch, seen } = scripted(failures);
  const rd = new Reminderd({ baseUrl: "http://127.0.0.1:8080", apiKey: KEY, fetch, retry: FAST });
  await assert.rejects(rd.schedule({ refId: "r", fireIn: 60 }), (error) => {
    assert.ok(error instanceof ApiError);
    assert.equal(error.status, 503);
    assert.equal(error.attempts, 4);
    assert.equal(error.message, "unavailable (503): scripted unavailable");
    return true;
  });
  assert.equal(seen.length, 4);
});

test("a rotation whose answer was lost raises SecretShownOnceError, once, with the same key", async () => {
  const { fetch, seen } = scripted(["cut", { status: 409, body: problem(409, "secret-shown-once") }]);
  const rd = new Reminderd({ baseUrl: "http://127.0.0.1:8080", apiKey: KEY, fetch, retry: FAST });
  await assert.rejects(rd.rotateSecret({ grace: "1h" }), (error) => {
    assert.ok(error instanceof SecretShownOnceError && error instanceof ApiError);
    assert.equal(error.name, "SecretShownOnceError");
    assert.equal(error.status, 409);
    assert.equal(error.attempts, 2);
    return true;
  });
  assert.equal(seen.length, 2);
  assert.equal(seen[0].headers["Idempotency-Key"], seen[1].headers["Idempotency-Key"]);
});

for (const [status, kind] of [[422, "invalid-request"], [409, "not-live"], [404, "not-found"], [401, "unauthorized"], [422, "idempotency-mismatch"]]) {
  test(`a ${status} ${kind} is raised at once with its problem`, async () => {
    const { fetch, seen } = scripted([{ status, body: problem(status, kind, { errors: [{ pointer: "/fire_at", detail: "bad" }] }) }]);
    const rd = new Reminderd({ baseUrl: "http://127.0.0.1:8080", apiKey: KEY, fetch, retry: FAST });
    await assert.rejects(rd.schedule({ refId: "r", fireAt: "tomorrow" }), (error) => {
      assert.equal(error.type, `urn:reminderd:problem:${kind}`);
      assert.equal(error.status, status);
      assert.deepEqual(error.errors, [{ pointer: "/fire_at", detail: "bad" }]);
      assert.equal(error.problem.detail, `scripted ${kind}`);
      return true;
    });
    assert.equal(seen.length, 1);
  });
}

test("an unreachable server is an unreachable problem after every attempt", async () => {
  const rd = new Reminderd({ baseUrl: "http://127.0.0.1:9", apiKey: KEY, retry: FAST });
  await assert.rejects(rd.schedule({ refId: "r", fireIn: 60 }), (error) => {
    assert.equal(error.type, "urn:reminderd:client:unreachable");
    assert.equal(error.status, 0);
    assert.equal(error.attempts, 4);
    const shown = `${error.stack} ${inspect(error, { depth: 5 })} ${JSON.stringify(error)}`;
    assert.ok(!shown.includes(KEY) && !shown.includes("s3cr3t"), shown);
    return true;
  });
});

test("an abort signal stops the call, its retries and waits", async () => {
  const { fetch, seen } = scripted([{ status: 503, headers: { "Retry-After": "30" }, body: problem(503, "unavailable") }]);
  const rd = new Reminderd({ baseUrl: "http://127.0.0.1:8080", apiKey: KEY, fetch, retry: FAST });
  const controller = new AbortController();
  const call = rd.schedule({ refId: "r", fireIn: 60 }, { signal: controller.signal });
  setTimeout(() => controller.abort(new Error("gave up")), 20);
  await assert.rejects(call, /gave up/);
  assert.equal(seen.length, 1);
});

test("list follows the cursor with the same filters, and never ends on an empty page", async () => {
  const message = { id: 1, ref_id: "b:1", status: "pending" };
  const { fetch, seen } = scripted([
    { body: { messages: [message, { ...message, id: 2 }], next_cursor: "c1" } },
    { body: { messages: [{ ...message, id: 3 }], next_cursor: "c2" } },
    { body: { messages: [], next_cursor: null } },
  ]);
  const rd = new Reminderd({ baseUrl: "http://127.0.0.1:8080", apiKey: KEY, fetch });
  const pages = [];
  for await (const page of rd.list({ refPrefix: "b:", status: ["pending", "paused"], pageSize: 2, fireAfter: new Date("2026-12-24T00:00:00Z") })) pages.push(page);
  assert.deepEqual(pages.map((p) => p.messages.map((m) => m.id)), [[1, 2], [3]]);
  const queries = seen.map((s) => Object.fromEntries(s.url.searchParams));
  const filters = { ref_prefix: "b:", status: "pending,paused", limit: "2", fire_after: "2026-12-24T00:00:00.000Z" };
  assert.deepEqual(queries, [filters, { ...filters, cursor: "c1" }, { ...filters, cursor: "c2" }]);
});

test("requeue sends resend=true only when asked to", async () => {
  const { fetch, seen } = scripted([{ status: 200 }, { status: 200 }], { id: 7, ref_id: "r", status: "pending" });
  const rd = new Reminderd({ baseUrl: "http://127.0.0.1:8080", apiKey: KEY, fetch });
  await rd.requeue(7);
  await rd.requeue(7, { resend: true });
  assert.deepEqual(seen.map((s) => `${s.url.pathname}${s.url.search}`),
    ["/v1/messages/7/requeue", "/v1/messages/7/requeue?resend=true"]);
});

test("the backoff is full jitter under a doubling ceiling, capped", () => {
  const policy = { attempts: 10, baseMs: 100, capMs: 800, maxRetryAfterMs: 60000 };
  for (const [retry, ceiling] of [[1, 100], [2, 200], [3, 400], [4, 800], [9, 800]]) {
    assert.equal(retryDelayMs(policy, retry, null, () => 1), ceiling);
    assert.equal(retryDelayMs(policy, retry, null, () => 0), 0);
  }
  assert.equal(retryDelayMs(policy, 10), null);
  assert.equal(retryDelayMs(policy, 1, 7000), 7000);
  assert.equal(retryDelayMs(policy, 1, 61000), null);
});

test("the API key is in no inspect(), JSON or error; only its visible prefix", async () => {
  const rd = new Reminderd({ baseUrl: "http://127.0.0.1:8080", apiKey: KEY, fetch: scripted([{ status: 401, body: problem(401, "unauthorized") }]).fetch });
  for (const shown of [inspect(rd, { showHidden: true, depth: 10 }), JSON.stringify(rd), String(Object.entries(rd))]) {
    assert.ok(!shown.includes("s3cr3t"), shown);
  }
  assert.equal(rd.keyPrefix, "rk_abcdefghijkm");
  await assert.rejects(rd.tenant(), (error) => !`${error.stack}${inspect(error)}`.includes("s3cr3t"));
});

test("bad options and ids are refused at once", () => {
  assert.throws(() => new Reminderd({ baseUrl: "ftp://127.0.0.1", apiKey: KEY }), /baseUrl: an http/);
  assert.throws(() => new Reminderd({ baseUrl: "http://127.0.0.1", apiKey: "" }), /apiKey/);
  const rd = new Reminderd({ baseUrl: "http://127.0.0.1", apiKey: KEY, fetch: scripted().fetch });
  assert.throws(() => rd.get("7; DROP"), /a message id is a positive integer/);
  assert.throws(() => rd.cancel(0), /positive integer/);
});

test("a problem's extension members are camelCase, as in wire.d.ts and a batch item's error", async () => {
  const { fetch } = scripted([
    { status: 409, body: problem(409, "not-live", { message_status: "sent" }) },
    { status: 401, body: problem(401, "unauthorized", { written_through_line: 20000 }) },
  ]);
  const rd = new Reminderd({ baseUrl: "http://127.0.0.1:8080", apiKey: KEY, fetch, retry: FAST });
  await assert.rejects(rd.pause(1), (error) => {
    assert.equal(error.problem.messageStatus, "sent");
    assert.equal(error.problem.message_status, undefined);
    return true;
  });
  await assert.rejects(rd.upsertContacts([{ contactId: "c1" }]), (error) => {
    assert.equal(error.problem.writtenThroughLine, 20000);
    assert.equal(error.problem.written_through_line, undefined);
    return true;
  });
});

for (const [retry, why] of [
  [{ attempts: NaN }, /retry\.attempts: a whole number of tries from 1/],
  [{ attempts: -1 }, /retry\.attempts/],
  [{ attempts: 0 }, /retry\.attempts/],
  [{ attempts: Infinity }, /retry\.attempts/],
  [{ attempts: 2.5 }, /retry\.attempts/],
  [{ baseMs: NaN }, /retry\.baseMs: a finite number of milliseconds/],
  [{ capMs: -1 }, /retry\.capMs/],
  [{ maxRetryAfterMs: Infinity }, /retry\.maxRetryAfterMs/],
  [{ attempts: "3" }, /retry\.attempts/],
  [{ atempts: 3 }, /retry: no option atempts/],
]) {
  test(`retry ${JSON.stringify(retry, (k, v) => (typeof v === "number" && !Number.isFinite(v) ? String(v) : v))} is refused at construction`, () => {
    assert.throws(() => new Reminderd({ baseUrl: "http://127.0.0.1:8080", apiKey: KEY, fetch: scripted().fetch, retry }),
      (error) => error instanceof RangeError || error instanceof TypeError ? (assert.match(error.message, why), true) : false);
  });
}

test("Retry-After is read as delta-seconds or an HTTP date; an endless one is too long", () => {
  const now = Date.parse("2026-12-02T10:00:00Z");
  assert.equal(retryAfterMs("3", now), 3000);
  assert.equal(retryAfterMs("Wed, 02 Dec 2026 10:00:07 GMT", now), 7000);
  assert.equal(retryAfterMs("Wed, 02 Dec 2026 09:59:00 GMT", now), 0);
  assert.equal(retryAfterMs("Infinity", now), Infinity);
  assert.equal(retryAfterMs("soon", now), null);
  assert.equal(retryAfterMs("-5", now), null);
  assert.equal(retryAfterMs(null, now), null);
});

test("a 503 whose Retry-After is endless fails at once, not after a backoff", async () => {
  const { fetch, seen } = scripted([{ status: 503, headers: { "Retry-After": "1e400" }, body: problem(503, "unavailable") }]);
  const rd = new Reminderd({ baseUrl: "http://127.0.0.1:8080", apiKey: KEY, fetch, retry: FAST });
  await assert.rejects(rd.schedule({ refId: "r", fireIn: 60 }), (error) => error.status === 503 && error.attempts === 1);
  assert.equal(seen.length, 1);
});

test("a server answering a cursor already followed ends the walk with an error, not an endless loop", async () => {
  const message = { id: 1, ref_id: "b:1", status: "pending" };
  const again = Array.from({ length: 50 }, (_, i) => ({ body: { messages: [{ ...message, id: i + 2 }], next_cursor: i % 2 ? "c1" : "c2" } }));
  const { fetch, seen } = scripted([{ body: { messages: [message], next_cursor: "c1" } }, ...again]);
  const rd = new Reminderd({ baseUrl: "http://127.0.0.1:8080", apiKey: KEY, fetch });
  const ids = [];
  await assert.rejects((async () => { for await (const m of rd.list().messages()) ids.push(m.id); })(), (error) => {
    assert.ok(error instanceof ApiError);
    assert.equal(error.type, "urn:reminderd:client:invalid-response");
    assert.match(error.message, /cursor c1 again/);
    return true;
  });
  assert.deepEqual(ids, [1, 2, 3]);
  assert.equal(seen.length, 3);
});

for (const baseUrl of ["http://admin:hunter2@127.0.0.1:8080", "https://rk_abcdefghijkm_hunter2@api.example.com", "ftp://u:hunter2@127.0.0.1", "http://u:hunter2@[::1", "http://u:p/hunter2@127.0.0.1"]) {
  test(`a base URL with credentials is refused without echoing them: ${baseUrl.replace("hunter2", "…")}`, () => {
    assert.throws(() => new Reminderd({ baseUrl, apiKey: KEY, fetch: scripted().fetch }), (error) => {
      assert.ok(error instanceof TypeError);
      assert.match(error.message, /^baseUrl: /);
      if (baseUrl.startsWith("http") && !baseUrl.endsWith("[::1") && !baseUrl.includes("/hunter2")) assert.match(error.message, /credentials go in apiKey/);
      const shown = `${error.message} ${error.stack} ${inspect(error, { showHidden: true, depth: 5 })} ${JSON.stringify(error)}`;
      assert.ok(!shown.includes("hunter2"), shown);
      return true;
    });
  });
}

const SECRET = "whsec_" + "c2VjcmV0".repeat(5) + "=";

test("a rotated signing secret is read by name, and in no console.log, JSON or inspect()", async () => {
  const { fetch } = scripted([{ status: 200, body: { secret: SECRET, previous_secret_valid_until: "2026-12-02T11:00:00Z" } }]);
  const rd = new Reminderd({ baseUrl: "http://127.0.0.1:8080", apiKey: KEY, fetch });
  const rotated = await rd.rotateSecret({ grace: "1h" });
  assert.equal(rotated.secret, SECRET);
  assert.equal(rotated.previousSecretValidUntil, "2026-12-02T11:00:00Z");
  const shown = [inspect(rotated), inspect(rotated, { showHidden: true, getters: true, depth: 10 }), JSON.stringify(rotated),
    JSON.stringify({ rotated }), String(Object.entries(rotated)), `${rotated}`];
  for (const text of shown) assert.ok(!text.includes("c2VjcmV0"), text);
  assert.match(JSON.stringify(rotated), /previousSecretValidUntil/);
});

test("an error quoting a request, a URL or an answer shows no API key or signing secret", async () => {
  const other = "S".repeat(40); // a key without the rk_ shape: hidden as itself
  for (const apiKey of [KEY, other]) {
    const hidden = apiKey === KEY ? "s3cr3t" : other;
    const echoing = async (url, init) => {
      throw new TypeError(`fetch failed: ${url}?token=${hidden} Authorization: ${init.headers.Authorization}`);
    };
    const proxyPage = async (url, init) => new Response(`<pre>bad gateway for Authorization: ${init.headers.Authorization}</pre>`, { status: 502 });
    const cutAnswer = async () => new Response(`{"secret":"${SECRET}","previous_secret_valid_until`, { status: 200 });
    for (const fetch of [echoing, proxyPage, cutAnswer]) {
      const rd = new Reminderd({ baseUrl: "http://127.0.0.1:8080", apiKey, fetch, retry: { attempts: 1 } });
      await assert.rejects(rd.rotateSecret(), (error) => {
        assert.ok(error instanceof ApiError, String(error));
        const text = `${error.message} ${error.stack} ${inspect(error, { depth: 10 })} ${JSON.stringify(error.problem)}`;
        assert.ok(!text.includes(hidden) && !text.includes("c2VjcmV0"), text);
        return true;
      });
    }
  }
});

for (const [call, where] of [
  [(rd) => rd.schedule({ refId: "r", fireIn: NaN }), /^fireIn: NaN is not a number JSON can carry/],
  [(rd) => rd.schedule({ refId: "r", fireIn: 60, maxAttempts: Infinity }), /^maxAttempts: Infinity/],
  [(rd) => rd.schedule({ refId: "r", fireIn: 60, payload: { amount: -Infinity } }), /^payload\.amount: -Infinity/],
  [(rd) => rd.scheduleMany([{ refId: "a", fireIn: 60 }, { refId: "b", fireIn: NaN }]), /^messages\[1\]\.fireIn: NaN/],
  [(rd) => rd.preview({ cron: "0 9 * * *", n: NaN }), /^n: NaN/],
  [(rd) => rd.contactMessages("c1", { limit: Infinity }), /^limit: Infinity/],
]) {
  test(`NaN and Infinity are refused before sending: ${where.source}`, async () => {
    const { fetch, seen } = scripted();
    const rd = new Reminderd({ baseUrl: "http://127.0.0.1:8080", apiKey: KEY, fetch });
    await assert.rejects(async () => call(rd), (error) => error instanceof TypeError && where.test(error.message));
    assert.equal(seen.length, 0);
  });
}

for (const timeoutMs of [NaN, 0, -1, Infinity, "30"]) {
  test(`timeoutMs ${String(timeoutMs)} is refused at construction`, () => {
    assert.throws(() => new Reminderd({ baseUrl: "http://127.0.0.1:8080", apiKey: KEY, fetch: scripted().fetch, timeoutMs }),
      /timeoutMs: a finite number of milliseconds above 0/);
  });
}

test("the timeout holds with a fetch that ignores its AbortSignal", { timeout: 5000 }, async () => {
  let calls = 0;
  const deaf = () => { calls++; return new Promise(() => {}); }; // never answers, never looks at the signal
  const rd = new Reminderd({ baseUrl: "http://127.0.0.1:8080", apiKey: KEY, fetch: deaf, timeoutMs: 50, retry: { attempts: 2, baseMs: 1, capMs: 1 } });
  const started = performance.now();
  await assert.rejects(rd.tenant(), (error) => {
    assert.equal(error.type, "urn:reminderd:client:unreachable");
    assert.match(error.detail, /no answer in time/);
    assert.equal(error.attempts, 2);
    return true;
  });
  assert.equal(calls, 2);
  assert.ok(performance.now() - started < 2000);
  const controller = new AbortController();
  const call = new Reminderd({ baseUrl: "http://127.0.0.1:8080", apiKey: KEY, fetch: deaf }).tenant({ signal: controller.signal });
  setTimeout(() => controller.abort(new Error("gave up")), 20);
  await assert.rejects(call, /gave up/);
});

test("a body that never ends is timed out too", { timeout: 5000 }, async () => {
  const endless = async () => ({ status: 200, headers: new Headers(), text: () => new Promise(() => {}) });
  const rd = new Reminderd({ baseUrl: "http://127.0.0.1:8080", apiKey: KEY, fetch: endless, timeoutMs: 50, retry: { attempts: 1 } });
  await assert.rejects(rd.tenant(), (error) => error.type === "urn:reminderd:client:unreachable");
});
