"""What the bench prints: progress as it goes, then one summary table and the exit status."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import asyncpg
import uvloop

from bench import ROOT


def say(text: str = "") -> None:
    print(text, flush=True)


def section(title: str) -> None:
    say("")
    say(f"== {title} " + "=" * max(0, 90 - len(title)))


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}/s"


@dataclass
class Row:
    metric: str
    value: str
    target: str = "-"
    status: str = "INFO"  # PASS, FAIL, INFO or ERROR


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, metric: str, value: str, target: str = "-", ok: bool | None = None) -> None:
        status = "INFO" if ok is None else ("PASS" if ok else "FAIL")
        self.rows.append(Row(metric, value, target, status))

    def error(self, scenario: str, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        self.errors.append(f"{scenario}: {text}")
        self.rows.append(Row(scenario, "did not complete", "-", "ERROR"))
        say(f"!! {scenario} FAILED: {text}")

    def interrupted(self) -> None:
        self.rows.append(Row("bench", "interrupted", "-", "ERROR"))

    def print_summary(self) -> None:
        widths = [max(len(r.metric) for r in self.rows), max(len(r.value) for r in self.rows),
                  max(len(r.target) for r in self.rows), 6]
        widths = [max(w, len(h)) for w, h in zip(widths, ("metric", "value", "target", "result"), strict=True)]
        line = "  ".join("-" * w for w in widths)
        say("")
        say("=" * len(line))
        say("SUMMARY")
        say("=" * len(line))
        say("  ".join(h.ljust(w) for h, w in zip(("metric", "value", "target", "result"), widths, strict=True)))
        say(line)
        for r in self.rows:
            cells = (r.metric, r.value, r.target, r.status)
            say("  ".join(v.ljust(w) for v, w in zip(cells, widths, strict=True)))
        say(line)
        statuses = Counter(r.status for r in self.rows)
        say(", ".join(f"{statuses[kind]} {kind}" for kind in ("PASS", "FAIL", "ERROR", "INFO")))
        for text in self.errors:
            say(f"error: {text}")

    def exit_code(self) -> int:
        """0 every target passed, 1 some target failed, 2 a scenario could not run."""
        if any(r.status == "ERROR" for r in self.rows):
            return 2
        return 1 if any(r.status == "FAIL" for r in self.rows) else 0


def environment() -> str:
    """The commit, the versions that matter and the CPU, for the report's first line."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False).stdout.strip()
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    uvloop_version = getattr(uvloop, "__version__", "?")
    return (f"reminderd {commit}{' (+ local changes)' if dirty else ''}; Python {platform.python_version()}, "
            f"aiohttp {aiohttp.__version__}, asyncpg {asyncpg.__version__}, uvloop {uvloop_version}; "
            f"{os.cpu_count()} CPUs ({cpu})")
