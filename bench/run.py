"""reminderd benchmark: one run, one report, every number measured on this machine.

    .venv/bin/python bench/run.py            # full run, a few minutes
    .venv/bin/python bench/run.py --quick    # smaller sizes, a smoke run
    .venv/bin/python bench/run.py --profile  # also py-spy the daemon during one extra delivery run
    .venv/bin/python bench/run.py --soak     # only the 10-minute soak (8)

Scenarios (see bench/README.md for what each number means):
 (1) HTTP ceiling: the daemon's HTTP client alone (reminderd.http1), signing each body.
 (2) reminderd delivering due rows to the same receiver (log level warning, then info to /dev/null).
 (3) timer precision of an idle daemon: lateness of messages spread over the next seconds.
 (4) burst: many rows due at one instant.
 (5) claim cost vs backlog: EXPLAIN (ANALYZE, BUFFERS) of the claim with 0 and 10M future rows.
 (6) daemon peak RSS (VmHWM) at the end of (2).
 (7) the HTTP API: POST /v1/messages at concurrency 32 and batches of 1,000, beside the SQL path.
     `--only api` runs it alone.
 (8) soak: 3 daemons for 10 minutes, 300 callbacks/s, a kill -9 a minute, the receiver failing 5 %
     (full runs only; `--soak` runs it alone, `--soak-minutes` shortens it).
 (9) start-up: spawn of `reminderd run` to its first claim.
 (10) write path: PostgreSQL CPU per callback for claim + record, before and after ANALYZE.
 (11) 1, 2 and 3 daemons delivering the same due rows from one database.
 (12) the dashboard's pages: server time on 1,000,000 messages and 5,000,000 deliveries.
 (13) the dashboard's live feed: the daemon's lateness without and with 50 feed streams open;
     (13b) a burst drained with and without the dashboard's counting triggers.
     `--only dashboard` runs (12), (13) and (13b) alone, `--only dashboard-triggers` (13b) alone.
 (14) contacts import: `reminderd contacts import` of a CSV, contacts per second. `--only import`
    runs it alone.
 (15) broadcast staging: 240,000 contacts over 14 zones in one call, checked against zoneinfo.
 (16) waves: the daemon delivering each zone's wave, lateness of the first 5,000 of each.
 (17) fairness: a small tenant's lateness beside another's 100,000-row wave, and the fair claim's
      cost at 1,000,000 due rows and on the hot path, against the code before issue 15.

Exit status: 0 every target passed, 1 some target failed, 2 a scenario could not run (error/timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: `bench` and `reminderd` from this checkout

import uvloop  # noqa: E402

from bench.harness import FULL, QUICK, Bench, Databases  # noqa: E402
from bench.receiver import ReceiverProcess  # noqa: E402
from bench.report import Report, environment, say, section  # noqa: E402
from bench.scenarios import (  # noqa: E402
    api,
    audiences,
    burst,
    claim_cost,
    client_ceiling,
    dashboard,
    delivery,
    fairness,
    http_ceiling,
    profile,
    scaling,
    soak,
    startup,
    timer,
    write_path,
)
from reminderd.testing import throwaway_cluster  # noqa: E402

Scenario = Callable[[Bench, Databases], Awaitable[object]]
Group = list[tuple[str, Scenario, float]]  # title, scenario, time limit in seconds


def dashboard_scenarios(bench: Bench) -> Group:
    """The dashboard's (12), (13) and (13b): title, scenario, time limit in seconds."""
    return [
        ("(12) dashboard pages", dashboard.pages, 1800),
        ("(13) dashboard feed", dashboard.feed, bench.sizes.timer_span_s * 2 + 120),
        ("(13b) dashboard triggers", dashboard.trigger_cost, 600),
    ]


# `--only NAME`: these scenarios alone, on their own throwaway cluster.
ALONE: dict[str, Callable[[Bench], Group]] = {
    "api": lambda bench: [("(7) HTTP API", api.run, 900)],
    "timer": lambda bench: [("(3) timer precision", timer.run, bench.sizes.timer_span_s + 60)],
    "startup": lambda bench: [("(9) start-up", startup.run, 300)],
    "write_path": lambda bench: [("(10) write path", write_path.run, 600)],
    "scaling": lambda bench: [("(11) daemons on one database", scaling.run, 900)],
    "dashboard": dashboard_scenarios,
    "dashboard-triggers": lambda bench: dashboard_scenarios(bench)[2:],
    "import": lambda bench: [("(14) contacts import", audiences.import_contacts, 600)],
    "audiences": lambda bench: [("(14) contacts import", audiences.import_contacts, 600),
                                ("(15) broadcast staging", audiences.stage, 600),
                                ("(16) waves", audiences.waves, 900)],
}


async def run_alone(bench: Bench, name: str) -> None:
    section("PostgreSQL: throwaway cluster, migrated template database")
    with throwaway_cluster() as cluster:
        dbs = Databases(cluster)
        await dbs.setup()
        try:
            for title, scenario, limit_s in ALONE[name](bench):
                try:
                    await asyncio.wait_for(scenario(bench, dbs), limit_s)
                except Exception as exc:
                    bench.report.error(title, exc)
        finally:
            await dbs.close()


async def run_soak(bench: Bench, minutes: float) -> None:
    """Only the soak (8), on its own throwaway cluster."""
    with throwaway_cluster() as cluster:
        dbs = Databases(cluster)
        await dbs.setup()
        try:
            await soak_scenario(bench, dbs, minutes)
        finally:
            await dbs.close()


async def soak_scenario(bench: Bench, dbs: Databases, minutes: float) -> None:
    plan = soak.Plan(duration_s=60 * minutes)
    try:
        await asyncio.wait_for(soak.run(bench, dbs, plan), plan.duration_s + plan.drain_s + 300)
    except Exception as exc:
        bench.report.error("(8) soak", exc)


async def run_scenarios(bench: Bench, with_profile: bool, soak_minutes: float | None) -> None:
    """Every scenario in order; one that fails is reported as an error and the next one runs."""
    report = bench.report
    ceiling: float | None = None
    try:
        ceiling = await http_ceiling.run(bench)
    except Exception as exc:
        report.error("(1) HTTP ceiling", exc)
    try:
        await client_ceiling.run(bench)
    except Exception as exc:
        report.error("(1b) CallbackClient alone", exc)

    section("PostgreSQL: throwaway cluster, migrated template database")
    started = time.time()
    with throwaway_cluster() as cluster:
        dbs = Databases(cluster)
        await dbs.setup()
        version = await dbs.admin.fetchval("SHOW server_version")
        say(f"PostgreSQL {version} on port {cluster.port}, ready and migrated in {time.time() - started:.1f}s "
            "(fsync off, synchronous_commit off)")
        try:
            await delivery.run(bench, dbs, ceiling)
            for title, scenario, limit_s in (
                ("(3) timer precision", timer.run, bench.sizes.timer_span_s + 60),
                ("(4) burst", burst.run, 120),
                ("(5) claim cost", claim_cost.run, 1800),
                ("(7) HTTP API", api.run, 900),
                ("(9) start-up", startup.run, 240),
                ("(10) write path", write_path.run, 600),
                ("(11) daemons on one database", scaling.run, 900),
                *dashboard_scenarios(bench),
            ):
                try:
                    await asyncio.wait_for(scenario(bench, dbs), limit_s)
                except Exception as exc:
                    report.error(title, exc)
            await audiences.run(bench, dbs)  # (14), (15), (16)
            try:
                await asyncio.wait_for(fairness.run(bench, dbs), 1500)
            except Exception as exc:
                report.error("(17) fairness", exc)
            if with_profile:
                await profile.run(bench, dbs)
            if soak_minutes:
                await soak_scenario(bench, dbs, soak_minutes)
        finally:
            await dbs.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--profile", action="store_true",
                        help="also run py-spy on the daemon during one extra delivery run")
    parser.add_argument("--soak", action="store_true", help="run only the soak (8)")
    parser.add_argument("--soak-minutes", type=float, default=10.0, metavar="N",
                        help="how long the soak runs (default 10); 0 leaves it out of a full run")
    parser.add_argument("--daemon-env", action="append", default=[], metavar="KEY=VALUE",
                        help="a REMINDERD_* setting for every daemon the bench starts (repeatable)")
    parser.add_argument("--only", choices=ALONE,
                        help="run only this scenario: api (7), startup (9), write_path (10), scaling (11), "
                             "dashboard (12)-(13b), dashboard-triggers (13b), import (14), "
                             "or audiences (14)-(16)")
    parser.add_argument("--api-log-level", default="warning", choices=("info", "warning"),
                        help="reminderd serve's log level in (7): info logs a line per request")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    daemon_settings: dict[str, str] = {}
    for item in args.daemon_env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("REMINDERD_"):
            parser.error(f"--daemon-env {item!r}: expected REMINDERD_NAME=VALUE")
        daemon_settings[key] = value

    kind = "soak" if args.soak else "quick" if args.quick else "full"
    say(f"reminderd bench ({kind} run): {environment()}")
    say(f"sizes: {sizes}")
    with open("/proc/loadavg", encoding="ascii") as handle:
        load = handle.read().split()[:3]
    say(f"load average before the run: {' '.join(load)} (other work on this 2-core machine skews every "
        "number; 'other' in the CPU lines below is CPU used outside the bench's processes)")
    report = Report()
    started = time.time()
    receiver = ReceiverProcess()
    say(f"receiver: pid {receiver.pid} at {receiver.url} (asyncio.Protocol on uvloop, its own process)")
    bench = Bench(sizes, receiver, report, daemon_settings, args.api_log_level)

    async def guarded() -> None:
        # SIGTERM or Ctrl-C cancels the scenarios, so every daemon, the cluster and the receiver
        # are cleaned up by their own finally blocks.
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        if args.soak:
            await run_soak(bench, args.soak_minutes)
        elif args.only:
            await run_alone(bench, args.only)
        else:
            await run_scenarios(bench, args.profile, None if args.quick else args.soak_minutes)

    try:
        uvloop.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted: cleaning up")
        report.interrupted()
    except Exception as exc:
        traceback.print_exc()
        report.error("bench", exc)
    finally:
        receiver.stop()
    report.print_summary()
    say(f"total bench time {time.time() - started:.0f}s; exit status {report.exit_code()}")
    return report.exit_code()


if __name__ == "__main__":
    raise SystemExit(main())
