// The JavaScript SDK of reminderd's HTTP API (`reminderd serve`). No dependencies: the global
// fetch of Node >= 20 (18 works too), or of a browser, Deno, Bun, a worker.
//
//   const rd = new Reminderd({ baseUrl: "http://127.0.0.1:8080", apiKey: process.env.REMINDERD_API_KEY });
//   const { id, status } = await rd.schedule({ refId: "booking:b7d2:24h", fireAt, payload });
//
// Names are camelCase here and snake_case on the wire (reminderd/openapi.yaml): each key of what is
// sent and received is converted, except inside a `payload` or a contact's `attributes`, which are
// the user's own JSON. Problems (RFC 9457) are raised as ApiError, their members camelCase
// (messageStatus) like every answer's, any secret they quote as …. Connection errors, timeouts
// (each attempt races a timer), 429 and 503 (after their Retry-After), 5xx and a 409 "still
// running" are retried with capped exponential backoff and full jitter; every write carries one
// Idempotency-Key per call, the same on each retry, so the server answers a retry with its first
// answer. The API key is kept in a private field: it is in no
// log, inspect() output, JSON or error.

const VERSION = "0.1.0";
const UNREACHABLE = "urn:reminderd:client:unreachable";
const INVALID_RESPONSE = "urn:reminderd:client:invalid-response";
const IDEMPOTENCY_IN_FLIGHT = "urn:reminderd:problem:idempotency-in-flight";
const SECRET_SHOWN_ONCE = "urn:reminderd:problem:secret-shown-once";
const KEY_SHAPE = /^(rk_[a-z2-7]{12})_/;

/** `ref_id` -> `refId` (the generator of wire.d.ts applies the same rule). */
export function camel(name) {
  return name.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
}

/** `refId` -> `ref_id`. */
export function snake(name) {
  return name.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase());
}

// The user's own JSON, whose keys are never converted: a message's payload, a contact's attributes.
const OWN_JSON = new Set(["payload", "attributes"]);

function convertKeys(value, rename, dates) {
  if (Array.isArray(value)) return value.map((item) => convertKeys(item, rename, dates));
  if (dates && value instanceof Date) return isoInstant(value);
  if (value === null || typeof value !== "object") return value;
  const out = {};
  for (const [key, item] of Object.entries(value)) {
    if (item === undefined) continue;
    out[rename(key)] = OWN_JSON.has(key) ? item : convertKeys(item, rename, dates);
  }
  return out;
}

/** What the SDK sends: camelCase keys to the wire's, Dates to RFC 3339, undefined left out; a NaN or
 * an Infinity (which JSON.stringify would send as null) refused, by its path. */
export function toWire(value) {
  finite(value, "");
  return convertKeys(value, snake, true);
}

function finite(value, path) {
  if (typeof value === "number" && !Number.isFinite(value)) {
    throw new TypeError(`${path || "the value"}: ${value} is not a number JSON can carry (a finite number is)`);
  }
  if (Array.isArray(value)) value.forEach((item, index) => finite(item, `${path}[${index}]`));
  else if (value !== null && typeof value === "object" && !(value instanceof Date)) {
    for (const [key, item] of Object.entries(value)) finite(item, path ? `${path}.${key}` : key);
  }
}

/** What the server answered, with camelCase keys. */
export function fromWire(value) {
  return convertKeys(value, camel, false);
}

function isoInstant(date) {
  if (Number.isNaN(date.getTime())) throw new TypeError("an invalid Date cannot be sent");
  return date.toISOString();
}

// What an error must never show, wherever it quotes a request, a URL or an answer: an API key
// (rk_<prefix>_<secret>: its prefix kept), a bearer token, a signing secret (whsec_…), a URL's user
// and password, a query parameter named like a secret.
const SECRETS = [
  [/\b(rk_[a-z2-7]{12})_[A-Za-z0-9_-]+/g, "$1_…"],
  [/\b(Bearer)\s+[!-~]+/gi, "$1 …"],
  [/\bwhsec_[A-Za-z0-9+/=_-]*/g, "whsec_…"],
  [/\/\/[^\s/?#@]*@/g, "//…@"],
  [/([?&;](?:[a-z_]*(?:key|token|secret|password|signature|auth)[a-z_]*)=)[^&#\s"']*/gi, "$1…"],
];

/** `text` with the secrets an error must not show replaced by …; `also`: one more to hide (the key). */
export function redact(text, also = null) {
  let out = String(text);
  if (also) out = out.split(also).join("…");
  for (const [pattern, replacement] of SECRETS) out = out.replace(pattern, replacement);
  return out;
}

function redactedProblem(problem, also = null) {
  const out = { ...problem };
  for (const name of ["title", "detail", "instance"]) if (typeof out[name] === "string") out[name] = redact(out[name], also);
  if (Array.isArray(out.errors)) out.errors = out.errors.map((e) => (typeof e?.detail === "string" ? { ...e, detail: redact(e.detail, also) } : e));
  return out;
}

/** The error every failed call raises: `problem` is the RFC 9457 document (any secret in it as …). */
export class ApiError extends Error {
  constructor(problem, attempts = 1) {
    problem = redactedProblem(problem);
    const fields = (problem.errors ?? [])
      .map((e) => `${e.pointer ?? e.parameter ?? e.header ?? "?"}: ${e.detail}`)
      .join("; ");
    const head = problem.status ? `${problem.title} (${problem.status})` : problem.title;
    super(`${head}: ${problem.detail}${fields ? ` [${fields}]` : ""}`);
    this.name = "ApiError";
    this.problem = problem;
    this.attempts = attempts;
  }
  get type() { return this.problem.type; }
  get title() { return this.problem.title; }
  /** The HTTP status; 0 when no answer came (type urn:reminderd:client:unreachable). */
  get status() { return this.problem.status; }
  get detail() { return this.problem.detail; }
  get errors() { return this.problem.errors ?? []; }
}

/**
 * The rotation was done, but its answer (the new signing secret, shown once) did not reach this
 * client: the retry of rotateSecret with the same Idempotency-Key got a 409 instead of the secret,
 * which the server never keeps. Rotate again (a new call) for a secret you can see.
 */
export class SecretShownOnceError extends ApiError {
  constructor(problem, attempts = 1) {
    super(problem, attempts);
    this.name = "SecretShownOnceError";
  }
}

/**
 * A rotation's answer: `secret` (whsec_…, shown once) is read by name, and shown by no console.log,
 * inspect() or JSON.stringify (which write "<hidden>").
 */
export class RotatedSecret {
  #secret;

  constructor({ secret, ...rest }) {
    this.#secret = secret;
    Object.assign(this, rest); // previousSecretValidUntil
  }

  get secret() { return this.#secret; }

  toJSON() { return { ...this, secret: "<hidden>" }; }

  toString() { return "[RotatedSecret <hidden>]"; }

  [Symbol.for("nodejs.util.inspect.custom")]() {
    return `RotatedSecret ${JSON.stringify(this.toJSON())}`;
  }
}

function apiError(problem, attempts) {
  return problem.type === SECRET_SHOWN_ONCE ? new SecretShownOnceError(problem, attempts) : new ApiError(problem, attempts);
}

const DEFAULT_RETRY = Object.freeze({ attempts: 4, baseMs: 250, capMs: 8000, maxRetryAfterMs: 60000 });

/** The retry option checked: NaN, a negative or an endless number would retry forever or never wait. */
function retryPolicy(retry) {
  if (retry === null || typeof retry !== "object") throw new TypeError("retry: an object such as { attempts: 4 }");
  for (const name of Object.keys(retry)) {
    if (!(name in DEFAULT_RETRY)) throw new TypeError(`retry: no option ${name} (attempts, baseMs, capMs, maxRetryAfterMs)`);
  }
  const policy = { ...DEFAULT_RETRY };
  for (const [name, value] of Object.entries(retry)) if (value !== undefined) policy[name] = value;
  if (!Number.isSafeInteger(policy.attempts) || policy.attempts < 1) {
    throw new RangeError(`retry.attempts: a whole number of tries from 1 (the first included), not ${show(policy.attempts)}`);
  }
  for (const name of ["baseMs", "capMs", "maxRetryAfterMs"]) {
    if (typeof policy[name] !== "number" || !Number.isFinite(policy[name]) || policy[name] < 0) {
      throw new RangeError(`retry.${name}: a finite number of milliseconds, 0 or more, not ${show(policy[name])}`);
    }
  }
  return Object.freeze(policy);
}

function show(value) {
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}

/**
 * Milliseconds to wait before retry number `retry` (from 1), or null when none is left or the
 * server's Retry-After is longer than maxRetryAfterMs. Full jitter: random in [0, min(cap, base·2^(retry-1))].
 */
export function retryDelayMs(policy, retry, retryAfterMs = null, random = Math.random) {
  if (retry >= policy.attempts) return null;
  if (retryAfterMs !== null) return retryAfterMs <= policy.maxRetryAfterMs ? retryAfterMs : null;
  return random() * Math.min(policy.capMs, policy.baseMs * 2 ** (retry - 1));
}

/**
 * A Retry-After header in milliseconds from `nowMs`: delta-seconds (what reminderd sends) or an HTTP
 * date (what a proxy in front may send); null when absent or unreadable (the backoff is used then).
 * An endless one ("1e400") is Infinity, longer than any maxRetryAfterMs: the call fails at once.
 */
export function retryAfterMs(header, nowMs = Date.now()) {
  const text = header?.trim();
  if (!text) return null;
  if (/^[0-9.eE+]+$|^Infinity$/.test(text)) {
    const seconds = Number(text);
    return Number.isNaN(seconds) ? null : seconds * 1000;
  }
  const at = /[a-z]/i.test(text) ? Date.parse(text) : NaN;
  return Number.isNaN(at) ? null : Math.max(0, at - nowMs);
}

function retryable(status, type) {
  return status === 429 || status >= 500 || (status === 409 && type === IDEMPOTENCY_IN_FLIGHT);
}

async function newIdempotencyKey() {
  // Node >= 19, browsers, Deno, Bun and workers have the Web Crypto global; Node 18 has node:crypto.
  const crypto = globalThis.crypto?.randomUUID ? globalThis.crypto : await import("node:crypto");
  return "rdjs_" + crypto.randomUUID();
}

/** A signal aborted when either is (AbortSignal.any, which Node 18 lacks). */
function either(signal, timeout) {
  if (!signal) return timeout;
  if (AbortSignal.any) return AbortSignal.any([signal, timeout]);
  const controller = new AbortController();
  for (const s of [signal, timeout]) {
    if (s.aborted) controller.abort(s.reason);
    else s.addEventListener("abort", () => controller.abort(s.reason), { once: true });
  }
  return controller.signal;
}

/**
 * `work`, or a rejection when `ms` pass (a TimeoutError, also aborting `controller` for a fetch that
 * listens) or `signal` aborts (its reason), whichever comes first; the timer is cleared after.
 */
function deadline(ms, signal, controller, work) {
  let timer;
  let onAbort;
  const stopped = new Promise((_, reject) => {
    timer = setTimeout(() => {
      const reason = new DOMException("no answer in time", "TimeoutError");
      controller.abort(reason);
      reject(reason);
    }, ms);
    onAbort = () => reject(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  work.catch(() => {}); // settled after the race was lost: nobody waits for it
  return Promise.race([work, stopped]).finally(() => {
    clearTimeout(timer);
    signal.removeEventListener("abort", onAbort);
  });
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const done = () => { signal?.removeEventListener("abort", abort); resolve(); };
    const timer = setTimeout(done, ms);
    const abort = () => { clearTimeout(timer); reject(signal.reason); };
    signal?.addEventListener("abort", abort, { once: true });
  });
}

function problemOf(status, statusText, text) {
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (data && typeof data === "object" && typeof data.type === "string") {
    return fromWire({ title: statusText, detail: "", status, ...data }); // messageStatus, as wire.d.ts says
  }
  return { type: "about:blank", title: statusText || "HTTP error", status, detail: text.slice(0, 200).trim() || `HTTP ${status}` };
}

function describe(error) {
  if (error?.name === "TimeoutError") return "no answer in time";
  const cause = error?.cause;
  const why = cause?.code ?? cause?.message;
  return why ? `${error.message} (${why})` : String(error?.message ?? error);
}

function queryString(query) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(toWire(query ?? {}))) {
    if (value === undefined || value === null) continue;
    params.set(key, Array.isArray(value) ? value.join(",") : String(value));
  }
  const text = params.toString();
  return text ? `?${text}` : "";
}

const CONTACTS_PER_ARRAY = 10000; // PUT /v1/contacts takes this many as a JSON array; more go as NDJSON

/** A contact id or an audience's name as a path segment. */
function segment(text) {
  return encodeURIComponent(String(text));
}

function broadcastId(id) {
  if (!Number.isSafeInteger(id) || id < 1) throw new TypeError(`a broadcast id is a positive integer, not ${id}`);
  return id;
}

function messageId(id) {
  if (!Number.isSafeInteger(id) || id < 1) throw new TypeError(`a message id is a positive integer, not ${id}`);
  return id;
}

/** A URL's user and password (`//user:password@`) as `//…@`, in any text. */
function withoutCredentials(text) {
  return text.replace(/\/\/\S*@/g, "//…@");
}

/** The client of one reminderd API server for one API key (so one tenant). */
export class Reminderd {
  #apiKey;
  #authorization;
  #fetch;

  constructor({ baseUrl, apiKey, timeoutMs = 30000, retry = {}, fetch = globalThis.fetch, userAgent } = {}) {
    let url;
    try {
      url = new URL(baseUrl);
    } catch { // its TypeError carries the input, credentials and all
      url = null;
    }
    if (url === null || (url.protocol !== "http:" && url.protocol !== "https:")) {
      throw new TypeError(`baseUrl: an http:// or https:// URL, not ${withoutCredentials(String(baseUrl))}`);
    }
    if (url.username || url.password) {
      throw new TypeError(`baseUrl: credentials go in apiKey, not in the URL (${withoutCredentials(url.href)})`);
    }
    url.search = "";
    url.hash = "";
    if (typeof apiKey !== "string" || !/^[!-~]+$/.test(apiKey)) {
      throw new TypeError("apiKey: the rk_… key printed by `reminderd api-key create` (missing or not printable)");
    }
    if (typeof fetch !== "function") throw new TypeError("no global fetch: Node >= 20, or pass { fetch }");
    if (typeof timeoutMs !== "number" || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      throw new RangeError(`timeoutMs: a finite number of milliseconds above 0 (each attempt's limit), not ${show(timeoutMs)}`);
    }
    this.baseUrl = url.href.replace(/\/+$/, "");
    this.timeoutMs = timeoutMs;
    this.retry = retryPolicy(retry);
    this.keyPrefix = KEY_SHAPE.exec(apiKey)?.[1] ?? null;
    this.userAgent = userAgent ?? `reminderd-js/${VERSION}`;
    this.#apiKey = apiKey;
    this.#authorization = `Bearer ${apiKey}`;
    this.#fetch = fetch;
  }

  toJSON() {
    return { baseUrl: this.baseUrl, apiKey: this.keyPrefix ? `${this.keyPrefix}_…` : "<hidden>" };
  }

  [Symbol.for("nodejs.util.inspect.custom")]() {
    return `Reminderd ${JSON.stringify(this.toJSON())}`;
  }

  /**
   * One logical call, retried as the policy says; the answer's JSON with camelCase keys.
   * @param {string} method @param {string} path @param {{ body?: unknown, query?: object,
   * idempotencyKey?: string, signal?: AbortSignal }} options
   */
  async request(method, path, { body, query, idempotencyKey, signal, raw } = {}) {
    const url = `${this.baseUrl}${path}${queryString(query)}`;
    const headers = { Authorization: this.#authorization, Accept: "application/json", "User-Agent": this.userAgent };
    let data;
    if (body !== undefined) {
      data = JSON.stringify(toWire(body));
      headers["Content-Type"] = "application/json";
    } else if (raw !== undefined) { // a body already encoded (NDJSON)
      data = raw.data;
      headers["Content-Type"] = raw.type;
    }
    if (method !== "GET") headers["Idempotency-Key"] = idempotencyKey ?? (await newIdempotencyKey());
    for (let attempt = 1; ; attempt++) {
      let response, text;
      const attemptDone = new AbortController();
      try {
        const abort = either(signal, attemptDone.signal);
        // Raced against the timer and the signal: a fetch that ignores its signal cannot outlast them.
        [response, text] = await deadline(this.timeoutMs, abort, attemptDone, (async () => {
          const answered = await this.#fetch(url, { method, headers, body: data, signal: abort, redirect: "manual" });
          return [answered, await answered.text()];
        })());
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        const problem = { type: UNREACHABLE, title: "reminderd unreachable", status: 0,
          detail: redact(`${method} ${path}: ${describe(error)}`, this.#apiKey) };
        const delay = retryDelayMs(this.retry, attempt);
        if (delay === null) throw new ApiError(problem, attempt);
        await sleep(delay, signal);
        continue;
      }
      if (response.status < 400) {
        try {
          return fromWire(JSON.parse(text));
        } catch {
          throw new ApiError({ type: INVALID_RESPONSE, title: "Answer not JSON", status: response.status,
            detail: redact(`${method} ${path}: ${text.slice(0, 200)}`, this.#apiKey) }, attempt);
        }
      }
      const problem = redactedProblem(problemOf(response.status, response.statusText, text), this.#apiKey);
      const delay = retryable(response.status, problem.type)
        ? retryDelayMs(this.retry, attempt, retryAfterMs(response.headers.get("retry-after")))
        : null;
      if (delay === null) throw apiError(problem, attempt);
      await sleep(delay, signal);
    }
  }

  async #count(method, path, options) {
    const answer = await this.request(method, path, options);
    if (!Number.isInteger(answer?.cancelled)) {
      throw new ApiError({ type: INVALID_RESPONSE, title: "Answer not as the API describes", status: 200,
        detail: `${method} ${path}: no count` });
    }
    return answer.cancelled;
  }

  // Messages ---------------------------------------------------------------------------------

  /** Schedule one message, one-off or recurring; a live message of the same refId is replaced. */
  schedule(message, { idempotencyKey, signal } = {}) {
    return this.request("POST", "/v1/messages", { body: message, idempotencyKey, signal });
  }

  /** Up to 1,000 messages in one request; atomic (default) is all or nothing. */
  scheduleMany(messages, { atomic = true, idempotencyKey, signal } = {}) {
    return this.request("POST", "/v1/messages/batch", { body: { messages: [...messages], atomic }, idempotencyKey, signal });
  }

  /** One message with its attempts (deliveries) and audit trail (events). */
  get(id, { signal } = {}) {
    return this.request("GET", `/v1/messages/${messageId(id)}`, { signal });
  }

  /** The messages page by page (`for await (const page of rd.list(query))`); `.messages()` one by one. */
  list({ pageSize, cursor, ...filters } = {}, { signal } = {}) {
    return new MessagePages(this, { ...filters, limit: pageSize }, cursor ?? null, signal);
  }

  /** One page of GET /v1/messages. */
  listPage(query = {}, { signal } = {}) {
    return this.request("GET", "/v1/messages", { query, signal });
  }

  /** Cancel one message: 1, or 0 when it was no longer live. */
  cancel(id, options = {}) {
    return this.#count("DELETE", `/v1/messages/${messageId(id)}`, options);
  }

  /** Cancel the live message of a ref (0 when none is live). */
  cancelRef(refId, options = {}) {
    return this.#count("DELETE", "/v1/messages", { ...options, query: { ref: refId } });
  }

  /** Cancel every live message whose ref matches a LIKE pattern ("booking:b7d2:%"). */
  cancelMatching(refPattern, options = {}) {
    return this.#count("POST", "/v1/messages/cancel", { ...options, body: { refPattern } });
  }

  /** Reschedule (one of fireAt, fireIn, localTime) and/or give a new payload. */
  update(id, changes, { idempotencyKey, signal } = {}) {
    return this.request("PATCH", `/v1/messages/${messageId(id)}`, { body: changes, idempotencyKey, signal });
  }

  /** `update` with a new time only: { fireAt } or { fireIn } or { localTime }. */
  reschedule(id, { fireAt, fireIn, localTime }, options = {}) {
    return this.update(id, { fireAt, fireIn, localTime }, options);
  }

  pause(id, options = {}) { return this.#action(id, "pause", options); }
  resume(id, options = {}) { return this.#action(id, "resume", options); }
  /** A dead message again; one that died after delivery only with `{ resend: true }` (409 without). */
  requeue(id, { resend, ...options } = {}) {
    return this.#action(id, "requeue", { ...options, query: resend ? { resend: "true" } : undefined });
  }

  /** A one-off due now, or a recurring message's extra occurrence now; `held` says if it waits. */
  sendNow(id, options = {}) { return this.#action(id, "send-now", options); }

  #action(id, action, { idempotencyKey, signal, query } = {}) {
    return this.request("POST", `/v1/messages/${messageId(id)}/${action}`, { idempotencyKey, signal, query });
  }

  // The tenant -------------------------------------------------------------------------------

  tenant({ signal } = {}) { return this.request("GET", "/v1/tenant", { signal }); }

  /** Change callbackUrl, calendar, holidayRule, quietHours, quietExempt (null clears calendar, quietHours). */
  updateTenant(changes, { idempotencyKey, signal } = {}) {
    return this.request("PATCH", "/v1/tenant", { body: changes, idempotencyKey, signal });
  }

  pauseTenant({ idempotencyKey, signal } = {}) {
    return this.request("POST", "/v1/tenant/pause", { idempotencyKey, signal });
  }

  resumeTenant({ idempotencyKey, signal } = {}) {
    return this.request("POST", "/v1/tenant/resume", { idempotencyKey, signal });
  }

  /** A new signing secret, shown once; the old one keeps signing for `grace`. */
  rotateSecret({ grace } = {}, { idempotencyKey, signal } = {}) {
    return this.request("POST", "/v1/tenant/rotate-secret", { body: grace === undefined ? {} : { grace }, idempotencyKey, signal })
      .then((answer) => new RotatedSecret(answer));
  }

  stats({ signal } = {}) { return this.request("GET", "/v1/stats", { signal }); }

  /** The next fire times of a schedule ({ cron } | { every } | { rrule }, timezone, n, from…). */
  preview(query, { signal } = {}) { return this.request("GET", "/v1/preview", { query, signal }); }

  // Contacts, audiences, broadcasts, cadences ---------------------------------------------------

  /**
   * Add or change contacts (PUT /v1/contacts): each { contactId, timezone?, phone?, country?,
   * attributes? }. Up to 10,000 go as one JSON array, more as NDJSON (written in batches); invalid
   * contacts are reported in `errors`, the rest written.
   */
  upsertContacts(contacts, { idempotencyKey, signal } = {}) {
    const items = [...contacts];
    if (items.length <= CONTACTS_PER_ARRAY) {
      return this.request("PUT", "/v1/contacts", { body: items, idempotencyKey, signal });
    }
    const ndjson = items.map((item) => JSON.stringify(toWire(item))).join("\n") + "\n";
    return this.request("PUT", "/v1/contacts", { raw: { type: "application/x-ndjson", data: ndjson }, idempotencyKey, signal });
  }

  /** One contact, the zone its messages get and why (zoneSource), its audiences. */
  contact(contactId, { signal } = {}) {
    return this.request("GET", `/v1/contacts/${segment(contactId)}`, { signal });
  }

  /** Delete a contact (its live messages are cancelled): 1, or 0 when there was none. */
  deleteContact(contactId, options = {}) {
    return this.request("DELETE", `/v1/contacts/${segment(contactId)}`, options).then((answer) => answer.deleted);
  }

  /** The contact's whole picture: live messages soonest first, then those ended within `recent`. */
  contactMessages(contactId, { recent, limit } = {}, { signal } = {}) {
    return this.request("GET", `/v1/contacts/${segment(contactId)}/messages`, { query: { recent, limit }, signal });
  }

  /** The tenant's named lists, with their sizes. */
  audiences({ signal } = {}) {
    return this.request("GET", "/v1/audiences", { signal }).then((answer) => answer.audiences);
  }

  /** Add contacts to a named list (made if new); how many were added. Unknown contacts: 404. */
  addToAudience(audience, contactIds, options = {}) {
    const body = { contactIds: [...contactIds] };
    return this.request("PUT", `/v1/audiences/${segment(audience)}/members`, { ...options, body }).then((answer) => answer.added);
  }

  /** Remove contacts from a named list; how many were removed. */
  removeFromAudience(audience, contactIds, options = {}) {
    const body = { contactIds: [...contactIds] };
    return this.request("DELETE", `/v1/audiences/${segment(audience)}/members`, { ...options, body }).then((answer) => answer.removed);
  }

  /** Drop a named list (its contacts stay); whether there was one. */
  dropAudience(audience, options = {}) {
    return this.request("DELETE", `/v1/audiences/${segment(audience)}`, options).then((answer) => answer.dropped);
  }

  /**
   * One message per contact at a wall time in each contact's zone (POST /v1/broadcasts): one of
   * audience, contactIds, everyone: true; one of localTime and cron/every/rrule. Above the tenant's
   * approval threshold it waits for another key's approval.
   */
  broadcast(request, { idempotencyKey, signal } = {}) {
    return this.request("POST", "/v1/broadcasts", { body: request, idempotencyKey, signal });
  }

  /** What `broadcast` would send: audienceSize, sendsPerUtcHour, zones; nothing is staged. */
  broadcastDryRun(request, { signal } = {}) {
    return this.request("POST", "/v1/broadcasts", { body: request, query: { dryRun: "true" }, signal });
  }

  /** The tenant's broadcasts, newest first (the last 200), with their counts. */
  broadcasts({ signal } = {}) {
    return this.request("GET", "/v1/broadcasts", { signal }).then((answer) => answer.broadcasts);
  }

  /** One broadcast, its counts, done and its waves. */
  getBroadcast(id, { signal } = {}) {
    return this.request("GET", `/v1/broadcasts/${broadcastId(id)}`, { signal });
  }

  /** Approve a broadcast awaiting approval; the key that created it may not (ApiError 403). */
  approveBroadcast(id, { note } = {}, { idempotencyKey, signal } = {}) {
    return this.request("POST", `/v1/broadcasts/${broadcastId(id)}/approve`, { body: note === undefined ? {} : { note }, idempotencyKey, signal });
  }

  /** Reject a broadcast awaiting approval: every message of it is cancelled. */
  rejectBroadcast(id, { note } = {}, { idempotencyKey, signal } = {}) {
    return this.request("POST", `/v1/broadcasts/${broadcastId(id)}/reject`, { body: note === undefined ? {} : { note }, idempotencyKey, signal });
  }

  /** Cancel a broadcast's live messages; no more waves are staged. */
  cancelBroadcast(id, { idempotencyKey, signal } = {}) {
    return this.request("POST", `/v1/broadcasts/${broadcastId(id)}/cancel`, { idempotencyKey, signal });
  }

  /** Messages at offsets around an anchor at a wall time on a contact's clock (POST /v1/cadences). */
  scheduleCadence(request, { idempotencyKey, signal } = {}) {
    return this.request("POST", "/v1/cadences", { body: request, idempotencyKey, signal });
  }
}

/** What `list` returns: an async iterable of pages, each fetched when wanted. */
export class MessagePages {
  constructor(client, query, cursor, signal) {
    this.client = client;
    this.query = query;
    this.cursor = cursor;
    this.signal = signal;
  }

  async *[Symbol.asyncIterator]() {
    let cursor = this.cursor;
    const followed = new Set([cursor]);
    for (;;) {
      const page = await this.client.listPage({ ...this.query, cursor: cursor ?? undefined }, { signal: this.signal });
      if (page.messages.length > 0 || cursor === this.cursor) yield page; // not the empty page that can end a walk
      if (page.nextCursor === null || page.nextCursor === undefined) return;
      if (followed.has(page.nextCursor)) { // a server (or a proxy's cache) going round: the walk would never end
        throw new ApiError({ type: INVALID_RESPONSE, title: "Answer not as the API describes", status: 200,
          detail: `GET /v1/messages: the server answered cursor ${page.nextCursor} again; following it would never end` });
      }
      followed.add(page.nextCursor);
      cursor = page.nextCursor;
    }
  }

  /** Every message of every page, one by one. */
  async *messages() {
    for await (const page of this) yield* page.messages;
  }
}

export default Reminderd;
