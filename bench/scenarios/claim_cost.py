"""(5) Claim cost vs backlog: EXPLAIN (ANALYZE, BUFFERS) of the claim, and of the daemon's other
periodic statements, with 100 due rows plus 0 and then a large backlog of future pending rows."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from bench.harness import PAYLOAD_SQL, TENANT, Bench, Databases
from bench.report import say, section
from reminderd.queries import QUERIES
from reminderd.testing import add_tenant

LOAD_CHUNK = 1_000_000


@dataclass
class PlanStats:
    execution_ms: float
    planning_ms: float
    hit: int
    read: int
    dirtied: int
    rows: int
    scans: list[str]
    text: str

    @property
    def buffers(self) -> int:
        return self.hit + self.read

    def seq_scans(self, relation: str | None = None) -> list[str]:
        return [s for s in self.scans if s.startswith("Seq Scan") and (relation is None or relation in s)]


def _plan_stats(document: Any) -> PlanStats:
    top = document[0] if isinstance(document, list) else document
    plan = top["Plan"]
    scans: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        kind = node.get("Node Type", "")
        if "Scan" in kind:
            target = node.get("Relation Name") or node.get("CTE Name") or ""
            index = f" using {node['Index Name']}" if node.get("Index Name") else ""
            scans.append(f"{kind} on {target}{index}")
        for child in node.get("Plans", []):
            walk(child)

    walk(plan)
    return PlanStats(
        execution_ms=float(top.get("Execution Time", 0.0)),
        planning_ms=float(top.get("Planning Time", 0.0)),
        hit=int(plan.get("Shared Hit Blocks", 0)),
        read=int(plan.get("Shared Read Blocks", 0)),
        dirtied=int(plan.get("Shared Dirtied Blocks", 0)),
        rows=int(plan.get("Actual Rows", 0)),
        scans=scans,
        text="",
    )


async def explain_rolled_back(db: asyncpg.Connection, statement: str, *args: Any,
                              setup: str | None = None, runs: int = 5) -> PlanStats:
    """EXPLAIN (ANALYZE, BUFFERS) inside transactions that are rolled back; the median run by time."""

    async def rolled_back(options: str) -> list[Any]:
        transaction = db.transaction()
        await transaction.start()
        try:
            if setup:
                await db.execute(setup)
            return list(await db.fetch(f"EXPLAIN ({options}) {statement}", *args))
        finally:
            await transaction.rollback()

    samples = []
    for _ in range(runs):
        raw = (await rolled_back("ANALYZE, BUFFERS, FORMAT JSON"))[0][0]
        samples.append(_plan_stats(json.loads(raw) if isinstance(raw, str) else raw))
    samples.sort(key=lambda s: s.execution_ms)
    median = samples[len(samples) // 2]
    median.text = "\n".join(r[0] for r in await rolled_back("ANALYZE, BUFFERS, COSTS OFF, TIMING OFF"))
    return median


async def run(bench: Bench, dbs: Databases) -> None:
    backlog, report = bench.sizes.backlog_n, bench.report
    section(f"(5) claim cost vs backlog: 100 due rows + 0, then + {backlog:,} future pending rows")
    _name, url = await dbs.fresh("claim")
    db = await asyncpg.connect(url, command_timeout=600, server_settings={"jit": "off"})  # as the daemon
    try:
        await add_tenant(db, TENANT, "http://127.0.0.1:9/unused")
        await db.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, payload) "
            f"SELECT '{TENANT}', 'due:' || i, now() - interval '1 second', {PAYLOAD_SQL.format(i='i')} "
            "FROM generate_series(1, 100) AS i"
        )
        await db.execute("VACUUM ANALYZE reminderd.scheduled_messages")
        # Both a custom plan (parameters known) and the generic plan a long-lived prepared
        # statement may switch to after five runs (asyncpg caches prepared statements).
        # The claim of migration 0010 with its budgets (the daemon runs claim_fair, lighter, while
        # no tenant or endpoint has a limit); $6 no default max_in_flight, $7 no scan cursor yet,
        # $8 the claiming daemon (migration 0008).
        await db.execute(
            "PREPARE bench_claim(float8, bigint, float8, text, float8, integer, text, uuid)"
            f" AS {QUERIES['claim']}"
        )
        execute = "EXECUTE bench_claim(86400, 100, 300, 'send', 1800, 2147483647, NULL, gen_random_uuid())"
        results: dict[tuple[int, str], PlanStats] = {}
        for mode in ("custom", "generic"):
            results[(0, mode)] = await explain_rolled_back(
                db, execute, setup=f"SET LOCAL plan_cache_mode = force_{mode}_plan")

        started = time.time()
        # Loaded in chunks with the triggers off (the claim reads none of what they write): ten
        # million rows through the audit trigger would cost the bench minutes and gigabytes more.
        await db.execute("SET session_replication_role = replica")
        for first in range(1, backlog + 1, LOAD_CHUNK):
            await db.execute(
                "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, payload) "
                f"SELECT '{TENANT}', 'future:' || i, now() + interval '1 hour' + i * interval '1 second', "
                f"{PAYLOAD_SQL.format(i='i')} FROM generate_series($1::bigint, $2::bigint) AS i",
                first, min(first + LOAD_CHUNK - 1, backlog),
            )
        await db.execute("RESET session_replication_role")
        inserted_s = time.time() - started
        # The 100 rows must still be due inside the lookback (120 s) however long the insert took.
        await db.execute("UPDATE reminderd.scheduled_messages SET fire_at = now() - interval '1 second' "
                         "WHERE ref_id LIKE 'due:%'")
        await db.execute("VACUUM ANALYZE reminderd.scheduled_messages")
        say(f"inserted {backlog:,} future rows in {inserted_s:.1f}s (INSERT ... SELECT generate_series in "
            f"chunks of {LOAD_CHUNK:,}, triggers off), then VACUUM ANALYZE")
        for mode in ("custom", "generic"):
            results[(backlog, mode)] = await explain_rolled_back(
                db, execute, setup=f"SET LOCAL plan_cache_mode = force_{mode}_plan")
        await db.execute("DEALLOCATE bench_claim")

        for (size, mode), stats in results.items():
            say(f"backlog {size:>9,} {mode:>7} plan: execution {stats.execution_ms:.3f} ms (median of 5), "
                f"planning {stats.planning_ms:.3f} ms, buffers hit {stats.hit} read {stats.read} "
                f"dirtied {stats.dirtied}, rows claimed {stats.rows}")
            say(f"{'':>26}scans: {'; '.join(stats.scans)}")
        say(f"claim plan at backlog {backlog:,} (custom, EXPLAIN ANALYZE BUFFERS, COSTS/TIMING OFF):")
        for line in results[(backlog, "custom")].text.splitlines():
            say(f"    {line}")

        for mode in ("custom", "generic"):
            empty, full = results[(0, mode)], results[(backlog, mode)]
            seq = full.seq_scans("scheduled_messages")
            flat_buffers = full.buffers <= 2 * empty.buffers + 50
            flat_time = full.execution_ms <= max(3 * empty.execution_ms, empty.execution_ms + 2.0)
            report.add(f"(5) claim exec time 0 -> {backlog:,} backlog ({mode})",
                       f"{empty.execution_ms:.2f} -> {full.execution_ms:.2f} ms", "flat", flat_time)
            report.add(f"(5) claim buffers 0 -> {backlog:,} backlog ({mode})",
                       f"{empty.buffers} -> {full.buffers}", "flat", flat_buffers)
            report.add(f"(5) Seq Scan on scheduled_messages ({mode})",
                       "yes: " + "; ".join(seq) if seq else "none", "none", not seq)
            at_zero = empty.seq_scans("scheduled_messages")
            report.add(f"(5) Seq Scan on scheduled_messages, no backlog ({mode})",
                       "yes (100-row table: cheapest plan)" if at_zero else "none")
            other = [s for s in full.seq_scans() if "scheduled_messages" not in s]
            if other:
                say(f"note ({mode}): {'; '.join(other)} (a one-row table: harmless)")

        # The daemon's other periodic statements against the same backlog (information only).
        say("the daemon's other periodic statements at this backlog (rolled back, median of 3):")
        periodic = {
            "seconds_until_next_due (every idle claim-loop pass)": ("seconds_until_next_due", (86400.0,)),
            "expire_missed (housekeeping, every poll)": ("expire_missed", (86400.0, 1000)),
            "reap_expired_leases (housekeeping, every poll)": ("reap_expired_leases", (1000,)),
            "recurring_to_plan (housekeeping, every poll)":
                ("recurring_to_plan", (86400.0, 500, "send", 1800.0)),
        }
        for label, (query, args) in periodic.items():
            stats = await explain_rolled_back(db, QUERIES[query], *args, runs=3)
            seq = stats.seq_scans("scheduled_messages")
            say(f"  {label}: {stats.execution_ms:.3f} ms, buffers {stats.buffers}"
                + (f", SEQ SCAN ({'; '.join(seq)})" if seq else f", {'; '.join(stats.scans)}"))
            report.add(f"(5) {query} at {backlog:,} backlog",
                       f"{stats.execution_ms:.2f} ms" + (" (Seq Scan)" if seq else ""))
    finally:
        await db.close()
