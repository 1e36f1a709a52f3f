"""reminderd.metrics: a recorded batch is accounted for at once, in the exposition Prometheus reads."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support import make_job

from reminderd.lifecycle import Event, Status
from reminderd.metrics import OUTCOMES, BatchHistogram, Metrics
from reminderd.outcome import AttemptResult, Outcome, handed_back

BUCKETS = (0.01, 0.1, 1.0)


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def test_a_batch_histogram_exposes_what_prometheus_clients_histogram_does() -> None:
    values = [0.0, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 3.0, 1e9]
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("x_seconds", "help", buckets=BUCKETS, registry=theirs)
    for value in values:
        reference.observe(value)
    batch = BatchHistogram("x_seconds", "help", buckets=BUCKETS, registry=ours)
    batch.observe_many(values[:4])
    batch.observe_many([])
    for value in values[4:]:
        batch.observe(value)
    assert samples(generate_latest(ours)) == samples(generate_latest(theirs))


def test_a_recorded_batch_counts_each_outcome_by_tenant_and_times_the_answers() -> None:
    metrics = Metrics(tenant_labels=True)
    due = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    ok = make_job(id=1, tenant_id="acme", scheduled_for=due)
    batch = [
        Outcome(ok, AttemptResult(True, 200, None, 20), Event.FIRED, Status.SENT),
        Outcome(make_job(id=2, tenant_id="acme"), AttemptResult(True, 200, None, 40), Event.FIRED, Status.SENT),
        Outcome(make_job(id=3, tenant_id="globex"), AttemptResult(False, None, "refused: 10.0.0.1", 0,
                permanent=True, poison=True, refused=True), Event.DEAD_LETTERED, Status.DEAD),
        Outcome(make_job(id=4, tenant_id="globex"), None, Event.DEFERRED, Status.PENDING),
    ]
    metrics.recorded(batch, due.timestamp() + 0.5)
    got = samples(metrics.exposition())
    assert got[("reminderd_callbacks_total", (("outcome", "fired"), ("tenant", "acme")))] == 2
    assert got[("reminderd_callbacks_total", (("outcome", "refused"), ("tenant", "globex")))] == 1
    assert got[("reminderd_callbacks_total", (("outcome", "deferred"), ("tenant", "globex")))] == 1
    assert got[("reminderd_callback_duration_seconds_count", ())] == 2  # the refusal had no answer
    assert got[("reminderd_callback_duration_seconds_sum", ())] == 0.06
    assert got[("reminderd_fire_lateness_seconds_count", ())] == 2
    assert got[("reminderd_fire_lateness_seconds_bucket", (("le", "0.25"),))] == 1  # job 2: on time
    assert got[("reminderd_fire_lateness_seconds_bucket", (("le", "0.5"),))] == 2  # job 1: 0.5 s late


def test_outcomes_held_or_handed_back_without_a_request_are_counted_under_names_outcomes_lists() -> None:
    """Every label value the counter gets is one OUTCOMES (and so the alerts' checks and the
    counter's help) knows: a frequency cap's `capped`, a hand-back's `released`."""
    metrics = Metrics(tenant_labels=False)
    metrics.recorded([
        Outcome(make_job(id=1), None, Event.CAPPED, Status.CANCELLED, refund_attempt=True),
        handed_back(make_job(id=2), "lease too short"),
    ], 0.0)
    got = {labels for name, labels in samples(metrics.exposition()) if name == "reminderd_callbacks_total"}
    assert got == {(("outcome", "capped"),), (("outcome", "released"),)}
    assert {"capped", "released"} <= set(OUTCOMES)
    help_text = next(f.documentation for f in text_string_to_metric_families(metrics.exposition().decode())
                     if f.name == "reminderd_callbacks")
    assert "capped" in help_text and "released" in help_text


def test_callbacks_in_flight_are_read_when_scraped() -> None:
    metrics = Metrics()
    in_flight: dict[int, str] = {}
    metrics.watch_in_flight(in_flight.__len__)
    in_flight.update({1: "a", 2: "b"})
    assert samples(metrics.exposition())[("reminderd_callbacks_in_flight", ())] == 2
