"""--profile: one more delivery run (not counted in the report's targets) with py-spy on the daemon
and pg_stat_statements loaded, printing where the daemon and PostgreSQL spend their time."""

from __future__ import annotations

import asyncio
import tempfile
import traceback
from collections import Counter
from pathlib import Path

from bench.harness import PY_SPY_HZ, Bench, Databases
from bench.report import say, section
from bench.scenarios.delivery import deliver

TIMEOUT_S = 240


async def run(bench: Bench, dbs: Databases) -> None:
    n = bench.sizes.deliver_n
    section(f"profile: py-spy on the daemon during one more {n:,}-row delivery (warning; not counted above)")
    raw = Path(tempfile.mkdtemp(prefix="reminderd-bench-")) / "daemon.pyspy.txt"
    try:
        await dbs.enable_pg_stat_statements()
        await asyncio.wait_for(
            deliver(bench, dbs, n, log_level="warning", to_devnull=False, label="profile", profile_to=raw),
            TIMEOUT_S,
        )
        print_profile(raw)
    except Exception as exc:
        bench.report.error("profile", exc)
        traceback.print_exc()


def print_profile(raw: Path, top: int = 25) -> None:
    """Self and inclusive sample counts per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_area: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame_name(frame) for frame in stack.split(";")
                  if frame and not frame.startswith("process ")]
        if not frames:
            frames = ["(no Python frame: native code) (native)"]
        own[frames[-1]] += count
        by_area[_area(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        say("py-spy recorded no samples")
        return
    say(f"py-spy: {total:,} busy samples (idle excluded) at {PY_SPY_HZ} Hz; raw stacks in {raw}")
    say("self time by area:")
    for area, count in by_area.most_common(12):
        say(f"  {100 * count / total:5.1f}%  {area}")
    say(f"top {top} functions by self time:")
    for frame, count in own.most_common(top):
        say(f"  {100 * count / total:5.1f}%  {frame}")
    say(f"top {top} functions by inclusive time (excluding the event loop's own frames):")
    shown = 0
    for frame, count in inclusive.most_common():
        if any(skip in frame for skip in ("<module>", "run (asyncio", "run_forever", "_run_once",
                                          "_run (asyncio/events", "main (reminderd/cli",
                                          "_run_daemon", "_event_loop_run", "_run_module",
                                          "run (uvloop", "runners.py")):
            continue
        say(f"  {100 * count / total:5.1f}%  {frame}")
        shown += 1
        if shown >= top:
            break


def _frame_name(frame: str) -> str:
    """'send (reminderd/callback.py:131)' -> 'send (reminderd/callback.py)', shortening site-packages."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def _area(frame: str) -> str:
    path = frame.partition(" (")[2].rstrip(")")
    top = path.split("/", 1)[0]
    if top.endswith(".py"):
        return f"stdlib {top}"
    return top or "?"
