// Compiled by `tsc -p clients/js` (tests/unit/test_js_types.py), never run: the declarations are
// valid TypeScript and type what users write. Each @ts-expect-error must be an error.
import { ApiError, Reminderd } from "../src/index.js";
import type { Message, MessageDetail, Operations, Page, Problem, ScheduleRequest, Scheduled, SentNow, Stats, Status } from "../src/index.js";

declare const apiKey: string;
const rd = new Reminderd({ baseUrl: "http://127.0.0.1:8080", apiKey, retry: { attempts: 3 } });

export async function oneLiner(): Promise<[number, Status]> {
  const { id, status }: Scheduled = await rd.schedule({ refId: "booking:b7d2:24h", fireAt: new Date(), payload: { to: "+1" } });
  return [id, status];
}

export async function everything(): Promise<void> {
  const request: ScheduleRequest = { refId: "r", every: "weekdays at 09:15", timezone: "Europe/London", maxLateness: "1h" };
  const batch = await rd.scheduleMany([request, { refId: "s", fireIn: 90 }], { atomic: false });
  const firstError: Problem | undefined = batch.results[0].error;
  void firstError;
  const detail: MessageDetail = await rd.get(1);
  const webhookIds: string[] = detail.deliveries.map((d) => d.webhookId);
  void webhookIds;
  for await (const page of rd.list({ refPrefix: "booking:", status: ["pending", "paused"], pageSize: 10 })) {
    const typed: Page = page;
    const cursor: string | null = typed.nextCursor;
    void cursor;
  }
  for await (const message of rd.list().messages()) {
    const m: Message = message;
    const extra: number | null = m.extraOf;
    void extra;
  }
  const counts: number[] = [await rd.cancel(1), await rd.cancelRef("r"), await rd.cancelMatching("b:%")];
  void counts;
  const moved: Message = await rd.reschedule(1, { fireIn: "2h" });
  void moved;
  await rd.update(1, { payload: null });
  const now: SentNow = await rd.sendNow(1);
  const heldUntil: string | null | undefined = now.held?.until;
  void heldUntil;
  await rd.updateTenant({ quietHours: null, quietExempt: ["otp"] });
  const { paused } = await rd.pauseTenant({ idempotencyKey: "k" });
  void paused;
  const secret: string = (await rd.rotateSecret({ grace: "1h" })).secret;
  void secret;
  const stats: Stats = await rd.stats();
  const delivered: number = stats.last1h.delivered;
  void delivered;
  const fires = (await rd.preview({ cron: "0 9 * * *", n: 3, from: new Date() })).fires.map((f) => f.utc);
  void fires;
}

export async function recipients(): Promise<void> {
  const written = await rd.upsertContacts([{ contactId: "c1", phone: "+44 20 7946 0018", attributes: { first_name: "A" } }]);
  const refused: number | undefined = written.errors[0]?.index;
  void refused;
  const zone: string | null = (await rd.contact("c1")).zone;
  void zone;
  const picture = await rd.contactMessages("c1", { recent: "1d" });
  const reason: string | null = picture.messages[0].reason;
  void reason;
  const added: number = await rd.addToAudience("vip", ["c1"]);
  void added;
  const preview = await rd.broadcastDryRun({ refPrefix: "bf", localTime: "2026-11-27T09:00", audience: "vip" });
  const size: number = preview.audienceSize;
  void size;
  const made = await rd.broadcast({ refPrefix: "bf", localTime: "2026-11-27T09:00", contactIds: ["c1"] });
  const released: number = (await rd.approveBroadcast(made.id, { note: "ok" })).released;
  void released;
  const cancelled: number = (await rd.cancelBroadcast(made.id)).cancelledMessages;
  void cancelled;
  const steps = (await rd.scheduleCadence({ refPrefix: "r", anchor: new Date().toISOString(), contactId: "c1" })).steps;
  void steps;
  await rd.schedule({ refId: "c", localTime: "2026-12-24T09:00", contactId: "c1" });
}

export async function mistakes(): Promise<void> {
  // @ts-expect-error a broadcast needs its refPrefix
  await rd.broadcast({ localTime: "2026-11-27T09:00", audience: "vip" });
  // @ts-expect-error refId is required
  await rd.schedule({ fireIn: "2h" });
  // @ts-expect-error the wire's snake_case is not the SDK's name
  await rd.schedule({ refId: "r", fire_in: "2h" });
  // @ts-expect-error backfill is one of send, latest, skip
  await rd.schedule({ refId: "r", fireIn: "2h", backfill: "all" });
  // @ts-expect-error status is a Status
  rd.list({ status: ["lost"] });
  // @ts-expect-error an id is a number
  await rd.get("1");
}

export function problems(error: unknown): string | undefined {
  if (error instanceof ApiError) {
    const pointer: string | undefined = error.errors[0]?.pointer;
    return `${error.status} ${error.type} ${pointer}`;
  }
  return undefined;
}

export function problemKinds(error: ApiError): string {
  switch (error.type) {
    case "urn:reminderd:problem:not-live": return `not live: ${error.problem.messageStatus}`;
    case "urn:reminderd:problem:rate-limited": return "slow down";
    case "urn:reminderd:client:unreachable": return "no answer";
    case "about:blank": return "a proxy's page";
    // @ts-expect-error a type the API does not document
    case "urn:reminderd:problem:not-livee": return "a typo";
    default: return error.type;
  }
}

/** POST /v1/broadcasts answers a broadcast (201: staged, or awaiting approval) or, with ?dry_run=true, a preview (200). */
export function createBroadcastAnswers(answer: Operations["createBroadcast"]["response"]): string {
  if ("dryRun" in answer) return `${answer.audienceSize} contacts, ${answer.approval}`;
  if (answer.approval === "awaiting") {
    const state: "awaiting_approval" | "done" | "rejected" | "sending" | "recurring" = answer.state;
    return `broadcast ${answer.id} waits for approval (${state})`;
  }
  return `broadcast ${answer.id}: ${answer.counts.staged} staged`;
}

export async function broadcastAnswers(): Promise<string> {
  const made = await rd.broadcast({ refPrefix: "bf", localTime: "2026-11-27T09:00", audience: "vip" });
  const preview = await rd.broadcastDryRun({ refPrefix: "bf", localTime: "2026-11-27T09:00", audience: "vip" });
  // @ts-expect-error a dry run's answer is no broadcast: it has no id
  void preview.id;
  return `${made.approval === "awaiting" ? made.state : made.id} ${preview.dryRun}`;
}
