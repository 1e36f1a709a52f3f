// The JavaScript SDK's API. The wire types are generated from reminderd/openapi.yaml into
// wire.d.ts (clients/js/generate_types.py); this file is the client around them.
import type {
  CancelByRefQuery, ListMessagesQuery, ListMessagesResponse, Message, MessageDetail,
  PauseTenantResponse, PreviewQuery, PreviewResponse, Problem, ProblemType, ResumeTenantResponse,
  RotateSecretBody, RotateSecretResponse, ScheduleBatchResponse, ScheduleRequest, Scheduled,
  SentNow, Stats, Tenant, UpdateMessageBody, UpdateTenantBody,
  ContactInput, ContactsWritten, Contact, ContactMessagesQuery, ContactMessagesResponse, ListAudiencesResponse,
  BroadcastRequest, BroadcastDetail, BroadcastPreview, Broadcast, ApproveBroadcastResponse, BroadcastCancelled,
  CadenceRequest, ScheduleCadenceResponse,
} from "./wire.js";

export * from "./wire.js";

/** Checked at construction: attempts a whole number from 1, the others finite and not negative; unknown names refused. */
export interface RetryOptions {
  /** tries in all, the first included (default 4; 1: never retry) */
  attempts?: number;
  /** the first backoff ceiling in ms (default 250), doubled each retry */
  baseMs?: number;
  /** the backoff ceiling's cap in ms (default 8000) */
  capMs?: number;
  /** a longer Retry-After is not waited for: the call fails at once (default 60000) */
  maxRetryAfterMs?: number;
}

export interface ClientOptions {
  /** where `reminderd serve` listens, e.g. http://127.0.0.1:8080 */
  baseUrl: string;
  /** rk_… from `reminderd api-key create TENANT --name NAME` */
  apiKey: string;
  /** each attempt's limit in ms, a finite number above 0 (default 30000); it holds with a fetch that ignores its signal too */
  timeoutMs?: number;
  retry?: RetryOptions;
  /** another fetch (default: the global one) */
  fetch?: typeof globalThis.fetch;
  userAgent?: string;
}

export interface CallOptions {
  /** your own key for this write (default: one chosen per call, the same on each retry) */
  idempotencyKey?: string;
  /** cancels the call, retries and waits included */
  signal?: AbortSignal;
}

export interface ReadOptions {
  signal?: AbortSignal;
}

/** list's filters: ListMessagesQuery with `pageSize` for the wire's `limit`. */
export type ListOptions = Omit<ListMessagesQuery, "limit"> & { pageSize?: number };

export type Page = ListMessagesResponse;

/**
 * What an ApiError's `type` is: a kind the API documents (ProblemType), one the client describes
 * (no answer; an answer not as the API describes), or about:blank (an error page that is not a
 * problem, a proxy's).
 */
export type ApiErrorType = ProblemType | "urn:reminderd:client:unreachable" | "urn:reminderd:client:invalid-response"
  | "about:blank";

export declare class ApiError extends Error {
  readonly name: "ApiError" | "SecretShownOnceError";
  /** the RFC 9457 problem, its members camelCase (or urn:reminderd:client:unreachable / invalid-response) */
  readonly problem: Problem & { type: ApiErrorType };
  /** tries made, retries included */
  readonly attempts: number;
  readonly type: ApiErrorType;
  readonly title: string;
  /** the HTTP status; 0 when no answer came */
  readonly status: number;
  readonly detail: string;
  readonly errors: NonNullable<Problem["errors"]>;
  constructor(problem: Problem & { type: ApiErrorType }, attempts?: number);
}

/** A rotation's retry that found the rotation done: its secret was shown once and is not shown again. */
export declare class SecretShownOnceError extends ApiError {
  readonly name: "SecretShownOnceError";
}

/** A rotation's answer: `secret` is read by name; console.log, inspect() and JSON.stringify show "<hidden>". */
export declare class RotatedSecret implements RotateSecretResponse {
  /** whsec_…, shown only in this answer */
  readonly secret: string;
  readonly previousSecretValidUntil: string | null;
  toJSON(): { secret: "<hidden>"; previousSecretValidUntil: string | null };
}

export declare class MessagePages implements AsyncIterable<Page> {
  readonly query: ListMessagesQuery;
  readonly cursor: string | null;
  [Symbol.asyncIterator](): AsyncIterator<Page>;
  /** every message of every page, one by one */
  messages(): AsyncIterable<Message>;
}

export declare class Reminderd {
  constructor(options: ClientOptions);
  readonly baseUrl: string;
  readonly timeoutMs: number;
  readonly retry: Readonly<Required<RetryOptions>>;
  /** the key's visible prefix (rk_xxxxxxxxxxxx), for support; never the key */
  readonly keyPrefix: string | null;

  /** Schedule one message (POST /v1/messages); a live message of the same refId is replaced. */
  schedule(message: ScheduleRequest, options?: CallOptions): Promise<Scheduled>;
  /** Up to 1,000 messages in one request (POST /v1/messages/batch). */
  scheduleMany(messages: Iterable<ScheduleRequest>, options?: CallOptions & { atomic?: boolean }): Promise<ScheduleBatchResponse>;
  /** One message, its attempts and audit trail (GET /v1/messages/{id}). */
  get(id: number, options?: ReadOptions): Promise<MessageDetail>;
  /** The messages, page by page, following the cursor (GET /v1/messages). */
  list(query?: ListOptions, options?: ReadOptions): MessagePages;
  listPage(query?: ListMessagesQuery, options?: ReadOptions): Promise<Page>;
  /** DELETE /v1/messages/{id}: 1, or 0 when it was no longer live. */
  cancel(id: number, options?: CallOptions): Promise<number>;
  /** DELETE /v1/messages?ref=…: the live message of a ref. */
  cancelRef(refId: CancelByRefQuery["ref"], options?: CallOptions): Promise<number>;
  /** POST /v1/messages/cancel: every live message whose ref matches a LIKE pattern. */
  cancelMatching(refPattern: string, options?: CallOptions): Promise<number>;
  /** PATCH /v1/messages/{id}: a new time and/or a new payload. */
  update(id: number, changes: UpdateMessageBody, options?: CallOptions): Promise<Message>;
  reschedule(id: number, when: Omit<UpdateMessageBody, "payload">, options?: CallOptions): Promise<Message>;
  pause(id: number, options?: CallOptions): Promise<Message>;
  resume(id: number, options?: CallOptions): Promise<Message>;
  /** A dead message again; one that died after its receiver accepted it only with `resend: true`. */
  requeue(id: number, options?: CallOptions & { resend?: boolean }): Promise<Message>;
  sendNow(id: number, options?: CallOptions): Promise<SentNow>;

  tenant(options?: ReadOptions): Promise<Tenant>;
  updateTenant(changes: UpdateTenantBody, options?: CallOptions): Promise<Tenant>;
  pauseTenant(options?: CallOptions): Promise<PauseTenantResponse>;
  resumeTenant(options?: CallOptions): Promise<ResumeTenantResponse>;
  rotateSecret(body?: RotateSecretBody, options?: CallOptions): Promise<RotatedSecret>;
  stats(options?: ReadOptions): Promise<Stats>;
  preview(query: PreviewQuery, options?: ReadOptions): Promise<PreviewResponse>;

  /** PUT /v1/contacts: up to 10,000 as a JSON array, more as NDJSON; refused ones in `errors`. */
  upsertContacts(contacts: Iterable<ContactInput>, options?: CallOptions): Promise<ContactsWritten>;
  contact(contactId: string, options?: ReadOptions): Promise<Contact>;
  /** 1, or 0 when there was none. */
  deleteContact(contactId: string, options?: CallOptions): Promise<number>;
  /** The contact's whole picture (GET /v1/contacts/{contactId}/messages). */
  contactMessages(contactId: string, query?: ContactMessagesQuery, options?: ReadOptions): Promise<ContactMessagesResponse>;
  audiences(options?: ReadOptions): Promise<ListAudiencesResponse["audiences"]>;
  /** How many were added. */
  addToAudience(audience: string, contactIds: Iterable<string>, options?: CallOptions): Promise<number>;
  /** How many were removed. */
  removeFromAudience(audience: string, contactIds: Iterable<string>, options?: CallOptions): Promise<number>;
  /** Whether there was such a list. */
  dropAudience(audience: string, options?: CallOptions): Promise<boolean>;
  broadcast(request: BroadcastRequest, options?: CallOptions): Promise<BroadcastDetail>;
  broadcastDryRun(request: BroadcastRequest, options?: ReadOptions): Promise<BroadcastPreview>;
  broadcasts(options?: ReadOptions): Promise<Broadcast[]>;
  getBroadcast(id: number, options?: ReadOptions): Promise<BroadcastDetail>;
  approveBroadcast(id: number, decision?: { note?: string }, options?: CallOptions): Promise<ApproveBroadcastResponse>;
  rejectBroadcast(id: number, decision?: { note?: string }, options?: CallOptions): Promise<BroadcastCancelled>;
  cancelBroadcast(id: number, options?: CallOptions): Promise<BroadcastCancelled>;
  scheduleCadence(request: CadenceRequest, options?: CallOptions): Promise<ScheduleCadenceResponse>;

  /** Any route: camelCase in and out, retried and idempotent like the methods. */
  request<T = unknown>(method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE", path: string,
    options?: CallOptions & { body?: unknown; query?: Record<string, unknown> }): Promise<T>;
  toJSON(): { baseUrl: string; apiKey: string };
}

/** `text` with API keys, bearer tokens, signing secrets, a URL's credentials and secret-named query values as …. */
export declare function redact(text: string, also?: string | null): string;
export declare function camel(name: string): string;
export declare function snake(name: string): string;
export declare function toWire(value: unknown): unknown;
export declare function fromWire(value: unknown): unknown;
/** A Retry-After header (delta-seconds or an HTTP date) in ms from nowMs; null when absent or unreadable. */
export declare function retryAfterMs(header: string | null, nowMs?: number): number | null;
export declare function retryDelayMs(policy: Required<RetryOptions>, retry: number, retryAfterMs?: number | null,
  random?: () => number): number | null;

export default Reminderd;
