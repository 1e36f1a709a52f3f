"""examples/prometheus/alerts.yml: well-formed, and alerting only on metrics the daemon exports.

Prometheus' own checker, `promtool`, validates the file and unit-tests each alert against
synthetic series. Without promtool those two tests are skipped on a workstation and fail in CI
(REMINDERD_CI=1, set by .ci/run, whose setup installs Debian's prometheus package for it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from reminderd.metrics import DEAD_LETTERING, OUTCOMES, Metrics
from reminderd.store import QueueDepth

ALERTS = Path(__file__).resolve().parents[2] / "examples" / "prometheus" / "alerts.yml"
METRIC_NAME = re.compile(r"\breminderd_[A-Za-z0-9_]+")
LABEL_MATCHER = re.compile(r'\b(\w+)\s*(=~?)\s*"([^"]*)"')
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
PROMTOOL = shutil.which("promtool")

# Every alert the operations guide promises, and the metric it is built on.
EXPECTED = {
    "ReminderdDown": "up",
    "ReminderdDatabaseUnreachable": "reminderd_database_up",
    "ReminderdNoRecentPoll": "reminderd_last_poll_age_seconds",
    "ReminderdDueNotPicked": "reminderd_due_not_picked",
    "ReminderdFireLatenessHigh": "reminderd_fire_lateness_seconds_bucket",
    "ReminderdDeadLettersRising": "reminderd_callbacks_total",
}


def load_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def exported_sample_names(*, tenant_labels: bool) -> set[str]:
    """Every sample name a daemon's /metrics can show, with each metric given a value."""
    m = Metrics(tenant_labels=tenant_labels)
    m.polled(3)
    m.database_failed()
    for outcome in OUTCOMES:
        m.count(outcome, "t")
    m.set_queue_depth(QueueDepth(pending=2, picked=1, paused=0, due_not_picked=0))
    m.callback_duration.observe(0.02)
    m.fire_lateness.observe(0.01)
    m.in_flight.inc()
    m.watch_pool(lambda: 1.0, lambda: 3.0)
    text = m.exposition().decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_the_file_has_groups_of_complete_rules() -> None:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert document["groups"], "no rule groups"
    for group in document["groups"]:
        assert group["name"] and group["rules"], group
    names = []
    for rule in load_rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert isinstance(rule["alert"], str) and rule["alert"], rule
        assert isinstance(rule["expr"], str) and rule["expr"].strip(), rule["alert"]
        assert DURATION.match(str(rule["for"])), f"{rule['alert']}: for={rule['for']!r}"
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]
        names.append(rule["alert"])
    assert len(names) == len(set(names)), "duplicate alert names"


def test_every_promised_alert_is_there_on_its_metric() -> None:
    by_name = {rule["alert"]: rule["expr"] for rule in load_rules()}
    assert set(EXPECTED) <= set(by_name)
    for alert, metric in EXPECTED.items():
        assert re.search(rf"\b{metric}\b", by_name[alert]), f"{alert} does not use {metric}"
    assert 'up{job="reminderd"}' in by_name["ReminderdDown"]
    assert "reminderd_callbacks_total{outcome=~" in by_name["ReminderdDeadLettersRising"]
    assert counted_outcomes(by_name["ReminderdDeadLettersRising"]) == set(DEAD_LETTERING)
    assert "histogram_quantile(0.99" in by_name["ReminderdFireLatenessHigh"]


@pytest.mark.parametrize("tenant_labels", [True, False], ids=["tenant-labels", "no-tenant-labels"])
def test_every_metric_an_alert_uses_is_exported(tenant_labels: bool) -> None:
    exported = exported_sample_names(tenant_labels=tenant_labels)
    for rule in load_rules():
        used = set(METRIC_NAME.findall(rule["expr"]))
        missing = used - exported
        assert not missing, f"{rule['alert']} uses {sorted(missing)}, which reminderd does not export"


def counted_outcomes(expr: str) -> set[str]:
    """The outcomes an expression's `outcome` matchers select (a regex is anchored, as in PromQL)."""
    selected: set[str] = set()
    for label, operator, value in LABEL_MATCHER.findall(expr):
        if label == "outcome":
            selected |= {o for o in OUTCOMES if (re.fullmatch(value, o) if operator == "=~" else o == value)}
    return selected


def test_every_dead_lettering_outcome_is_counted_under_its_own_name() -> None:
    assert set(DEAD_LETTERING) == {"dead_lettered", "refused"} and set(DEAD_LETTERING) <= set(OUTCOMES)


def test_label_values_in_matchers_are_ones_the_daemon_uses() -> None:
    for rule in load_rules():
        for label, operator, value in LABEL_MATCHER.findall(rule["expr"]):
            if label == "outcome":
                alternatives = value.split("|") if operator == "=~" else [value]
                for alternative in alternatives:
                    assert alternative in OUTCOMES, f"{rule['alert']}: outcome={alternative!r} is never counted"


def test_the_exporter_really_names_the_counter_with_total() -> None:
    """The rule for dead letters relies on prometheus_client's `_total` suffix."""
    exported = exported_sample_names(tenant_labels=True)
    assert {"reminderd_callbacks_total", "reminderd_fire_lateness_seconds_bucket"} <= exported
    assert "reminderd_callbacks" not in exported


def promtool() -> str:
    """promtool's path; in CI its absence is a failure, elsewhere a skip."""
    if PROMTOOL is not None:
        return PROMTOOL
    if os.environ.get("REMINDERD_CI") == "1":
        pytest.fail("promtool is not installed: .ci/setup --test installs Debian's prometheus package in CI",
                    pytrace=False)
    pytest.skip("promtool is not installed (Debian: apt-get install prometheus); CI runs these")


# promtool unit tests: each alert fires on the series that should trigger it, and only then.
RULE_TESTS = """
rule_files:
  - {alerts}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up{{job="reminderd", instance="a:9464"}}'
        values: '1 1 0 0 0 0 0'
      - series: 'reminderd_database_up{{job="reminderd", instance="a:9464"}}'
        values: '1 0 0 0 0'
      - series: 'reminderd_last_poll_age_seconds{{job="reminderd", instance="a:9464"}}'
        values: '1 30 61'
      - series: 'reminderd_due_not_picked{{job="reminderd", instance="a:9464"}}'
        values: '0 500x10'
      - series: 'reminderd_due_not_picked{{job="reminderd", instance="b:9464"}}'
        values: '0 500x10'
      - series: 'reminderd_callbacks_total{{job="reminderd", instance="a:9464",
                   outcome="dead_lettered", tenant="acme"}}'
        values: '0 0 1 1 1 1 1 1 1 1'
      - series: 'reminderd_callbacks_total{{job="reminderd", instance="a:9464",
                   outcome="refused", tenant="zeta"}}'
        values: '0 0 3 3 3 3 3 3 3 3'
      - series: 'reminderd_callbacks_total{{job="reminderd", outcome="fired", tenant="beta"}}'
        values: '0+10x30'
{lateness}
    alert_rule_test:
      - eval_time: 3m
        alertname: ReminderdDown
        exp_alerts: []
      - eval_time: 5m
        alertname: ReminderdDown
        exp_alerts:
          - exp_labels: {{severity: page, job: reminderd, instance: "a:9464"}}
      - eval_time: 2m
        alertname: ReminderdDatabaseUnreachable
        exp_alerts:
          - exp_labels: {{severity: page, job: reminderd, instance: "a:9464"}}
      - eval_time: 1m
        alertname: ReminderdNoRecentPoll
        exp_alerts: []
      - eval_time: 2m
        alertname: ReminderdNoRecentPoll
        exp_alerts:
          - exp_labels: {{severity: page, job: reminderd, instance: "a:9464"}}
      - eval_time: 4m
        alertname: ReminderdDueNotPicked
        exp_alerts: []
      - eval_time: 7m
        alertname: ReminderdDueNotPicked
        exp_alerts:
          - exp_labels: {{severity: page, job: reminderd}}
      - eval_time: 8m
        alertname: ReminderdDeadLettersRising
        exp_alerts:
          - exp_labels: {{severity: ticket, job: reminderd, tenant: acme}}
          - exp_labels: {{severity: ticket, job: reminderd, tenant: zeta}}
      - eval_time: 20m
        alertname: ReminderdFireLatenessHigh
        exp_alerts:
          - exp_labels: {{severity: ticket, job: reminderd}}
"""


def _lateness_series() -> str:
    """Every delivery lands between 1 and 2.5 s late: p99 is far above 0.5 s."""
    lines = []
    for le, per_minute in (("0.5", 0), ("1", 0), ("2.5", 10), ("+Inf", 10)):
        labels = 'job="reminderd", instance="a:9464", le="' + le + '"'
        lines.append(f"      - series: 'reminderd_fire_lateness_seconds_bucket{{{labels}}}'")
        lines.append(f"        values: '0+{per_minute}x30'")
    return "\n".join(lines)


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_fire_each_alert(tmp_path: Path) -> None:
    # promtool compares annotations too: test a copy without them (check rules covers them).
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules = tmp_path / "alerts.yml"
    rules.write_text(yaml.safe_dump(document), encoding="utf-8")
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(RULE_TESTS.format(alerts=rules, lateness=_lateness_series()), encoding="utf-8")
    result = subprocess.run(
        [promtool(), "test", "rules", str(tests)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
