"""Unit tests for reminderd.schedule.human: phrases to cron, and cron back to English."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from reminderd.schedule.cron import InvalidSchedule, next_fire, validate_cron
from reminderd.schedule.human import EXAMPLES, UnknownPhrase, compile_phrase, describe

KOLKATA = ZoneInfo("Asia/Kolkata")
AFTER = datetime(2026, 1, 1, tzinfo=UTC)  # Thursday 1 January 2026, 05:30 in Kolkata


@pytest.mark.parametrize(
    ("phrase", "cron"),
    [
        ("every second", "* * * * * *"),
        ("every 1 second", "* * * * * *"),
        ("every 30 seconds", "*/30 * * * * *"),
        ("Every 5 Seconds", "*/5 * * * * *"),
        ("every minute", "* * * * *"),
        ("every 1 minute", "* * * * *"),
        ("every 15 minutes", "*/15 * * * *"),
        ("  Every   5  MINUTES ", "*/5 * * * *"),
        ("every 30 minutes", "*/30 * * * *"),
        ("every hour", "0 * * * *"),
        ("hourly", "0 * * * *"),
        ("every 2 hours", "0 */2 * * *"),
        ("every 12 hours", "0 */12 * * *"),
        ("every 60 seconds", "* * * * *"),  # a whole unit is the next one's every 1
        ("every 60 minutes", "0 * * * *"),
        ("every 24 hours", "0 0 * * *"),
        ("daily at 9am", "0 9 * * *"),
        ("Daily at 9 AM", "0 9 * * *"),
        ("every day at 09:15", "15 9 * * *"),
        ("every day at 9:30pm", "30 21 * * *"),
        ("daily at 12pm", "0 12 * * *"),
        ("daily at 12am", "0 0 * * *"),
        ("daily at 21:00", "0 21 * * *"),
        ("daily at 9", "0 9 * * *"),
        ("every day at noon", "0 12 * * *"),
        ("every day at midnight", "0 0 * * *"),
        ("every monday at 9am", "0 9 * * 1"),
        ("mondays at 9am", "0 9 * * 1"),
        ("every sunday at 8pm", "0 20 * * 0"),
        ("Every Monday at 9am", "0 9 * * 1"),
        ("first monday of each month at 9am", "0 9 * * 1#1"),
        ("second tue of every month at 18:30", "30 18 * * 2#2"),
        ("third wednesday of the month at noon", "0 12 * * 3#3"),
        ("fourth sunday of each month at 8pm", "0 20 * * 0#4"),
        ("on the first monday of the month at 9am", "0 9 * * 1#1"),
        ("last friday of each month at 5pm", "0 17 * * L5"),
        ("last sun of every month at 10am", "0 10 * * L0"),
        ("at 9am on weekdays", "0 9 * * 1-5"),
        ("at 9 am every monday", "0 9 * * 1"),
        ("at noon daily", "0 12 * * *"),
        ("every mon, wed and fri at 18:30", "30 18 * * 1,3,5"),
        ("every fri,mon , wed at 18:30", "30 18 * * 1,3,5"),
        ("every tues and thurs at 7am", "0 7 * * 2,4"),
        ("weekdays at 09:15", "15 9 * * 1-5"),
        ("every weekday at 09:15", "15 9 * * 1-5"),
        ("weekends at 10am", "0 10 * * 0,6"),
        ("first day of each month at noon", "0 12 1 * *"),
        ("on the first day of the month at 9am", "0 9 1 * *"),
        ("last day of each month at 17:00", "0 17 L * *"),
        ("last day of every month at 5pm", "0 17 L * *"),
        ("every month on the 15th at 8am", "0 8 15 * *"),
        ("every month on 1 at 8am", "0 8 1 * *"),
        ("every year on 24 dec at 9am", "0 9 24 12 *"),
        ("every year on the 24th of December at 9am", "0 9 24 12 *"),
        ("every year on december 24 at 9am", "0 9 24 12 *"),
        ("every year on feb 28 at 9am", "0 9 28 2 *"),
        ("midnight", "0 0 * * *"),
        ("noon", "0 12 * * *"),
    ],
)
def test_phrase_compiles_to_exact_cron(phrase: str, cron: str) -> None:
    assert compile_phrase(phrase) == cron
    validate_cron(cron)


@pytest.mark.parametrize("phrase", EXAMPLES)
def test_every_advertised_example_compiles(phrase: str) -> None:
    validate_cron(compile_phrase(phrase))


@pytest.mark.parametrize(
    ("phrase", "local"),
    [
        ("weekdays at 09:15", datetime(2026, 1, 1, 9, 15)),
        ("every mon, wed and fri at 18:30", datetime(2026, 1, 2, 18, 30)),
        ("weekends at 10am", datetime(2026, 1, 3, 10)),
        ("first day of each month at noon", datetime(2026, 1, 1, 12)),
        ("last day of each month at 17:00", datetime(2026, 1, 31, 17)),
        ("every month on the 15th at 8am", datetime(2026, 1, 15, 8)),
        ("every year on 24 dec at 9am", datetime(2026, 12, 24, 9)),
        ("midnight", datetime(2026, 1, 2)),
        ("every 15 minutes", datetime(2026, 1, 1, 5, 45)),
        ("every 2 hours", datetime(2026, 1, 1, 6)),
        ("every 30 seconds", datetime(2026, 1, 1, 5, 30, 30)),
        ("every 24 hours", datetime(2026, 1, 2)),
        ("first monday of each month at 9am", datetime(2026, 1, 5, 9)),
        ("last friday of each month at 5pm", datetime(2026, 1, 30, 17)),
        ("at 9am on weekdays", datetime(2026, 1, 1, 9)),
    ],
)
def test_round_trip_through_next_fire(phrase: str, local: datetime) -> None:
    fire = next_fire(compile_phrase(phrase), "Asia/Kolkata", AFTER)
    assert fire.astimezone(KOLKATA).replace(tzinfo=None) == local


@pytest.mark.parametrize(
    ("phrase", "bad"),
    [
        ("daily at 25:00", '"25:00": hours go up to 23'),
        ("daily at 24:00", '"24:00": hours go up to 23'),
        ("daily at 13pm", '"13pm": with am or pm the hour is 1 to 12'),
        ("daily at 0am", '"0am": with am or pm the hour is 1 to 12'),
        ("daily at 9:61", '"9:61": minutes go up to 59'),
        ("daily at 9:5", 'cannot read the time "9:5"'),
        ("weekdays at teatime", 'cannot read the time "teatime"'),
    ],
)
def test_bad_time_is_named(phrase: str, bad: str) -> None:
    with pytest.raises(UnknownPhrase) as info:
        compile_phrase(phrase)
    assert bad in str(info.value)


@pytest.mark.parametrize(
    ("phrase", "reason"),
    [
        ("every 7 minutes", "must divide 60 evenly (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)"),
        (
            "every 120 minutes",
            "cannot run every 120 minutes: cron counts minutes afresh each hour, so the number must divide 60 "
            "evenly (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30) or be 60; a longer step is written in hours "
            "(every 2 hours)",
        ),
        ("every 0 minutes", "must divide 60"),
        ("every 5 hours", "must divide 24 evenly (1, 2, 3, 4, 6, 8, 12)"),
        ("every 48 hours", "must divide 24 evenly (1, 2, 3, 4, 6, 8, 12) or be 24; a longer step is written in"
                           " days"),
        (
            "every 7 seconds",
            "cannot run every 7 seconds: cron counts seconds afresh each minute, "
            "so the number must divide 60 evenly (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)",
        ),
        ("every 90 seconds", "must divide 60 evenly (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30) or be 60"),
        ("every 0 seconds", "must divide 60"),
        (
            "every month on the 31st at 9am",
            "day 31 is missing from some months, which cron would skip; use a day",
        ),
        ("every month on the 0th at 9am", "there is no day 0 in a month"),
        ("every year on 30 feb at 9am", "there is no day 30 in February"),
        ("every year on 29 feb at 9am", "29 February is missing from most years"),
    ],
)
def test_schedules_that_cron_would_distort_are_refused(phrase: str, reason: str) -> None:
    with pytest.raises(UnknownPhrase) as info:
        compile_phrase(phrase)
    assert reason in str(info.value)


@pytest.mark.parametrize(
    "phrase",
    [
        "",
        "whenever",
        "at 9am",
        "every funday at 9am",
        "every month at 9am",
        "every year on 24 smarch at 9am",
        "every mo at 9am",
        "tomorrow at 9am",
        "every 15 mins",
        "every 15 secs",
        "fifth monday of each month at 9am",
        "last funday of each month at 9am",
        "first monday at 9am",
        "at 9am on",
    ],
)
def test_unknown_phrase_lists_examples(phrase: str) -> None:
    with pytest.raises(UnknownPhrase) as info:
        compile_phrase(phrase)
    message = str(info.value)
    assert message.startswith(f'cannot read the schedule "{phrase.strip()}"; phrases like these work: ')
    assert all(f'"{example}"' in message for example in EXAMPLES)


def test_unknown_phrase_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="cannot read the schedule"):
        compile_phrase("sometime")


@pytest.mark.parametrize(
    ("cron", "words"),
    [
        ("15 9 * * 1-5", "At 09:15, Monday through Friday"),
        ("15 9 * * MON-FRI", "At 09:15, Monday through Friday"),
        ("0 0 9 * * MON-FRI", "At 09:00, Monday through Friday"),
        ("30 0 9 * * *", "At 09:00:30"),
        ("*/30 * * * * *", "Every 30 seconds"),
        ("* * * * * *", "Every second"),
        ("* * * * *", "Every minute"),
        ("*/15 * * * *", "Every 15 minutes"),
        ("0/15 * * * *", "Every 15 minutes"),
        ("0 * * * *", "Every hour"),
        ("0 */2 * * *", "Every 2 hours"),
        ("15,45 * * * *", "At 15 and 45 minutes past the hour"),
        ("30 */6 * * *", "At 30 minutes past the hour, every 6 hours"),
        ("5-10 * * * *", "Minutes 5 through 10 past the hour"),
        ("0 9 * * *", "At 09:00"),
        ("0,30 9 * * *", "At 0 and 30 minutes past the hour, at 09:00"),  # 09:00 and 09:30
        ("0 9,13,17 * * *", "At 09:00, 13:00 and 17:00"),
        ("30 18 * * 1,3,5", "At 18:30, only on Monday, Wednesday, and Friday"),
        ("0 10 * * 0,6", "At 10:00, only on Sunday and Saturday"),
        ("0 10 * * 5-7", "At 10:00, Friday through Sunday"),
        ("0 9-17 * * 1-5", "At 0 minutes past the hour, between 09:00 and 17:59, Monday through Friday"),
        ("*/15 9-17 * * *", "Every 15 minutes, between 09:00 and 17:59"),
        ("* 9 * * *", "Every minute, between 09:00 and 09:59"),
        ("0 12 1 * *", "At 12:00, on day 1 of the month"),
        ("0 12 1,15 * *", "At 12:00, on day 1 and 15 of the month"),
        ("0 12 1-7 * *", "At 12:00, between day 1 and 7 of the month"),
        ("0 9 */2 * *", "At 09:00, every 2 days"),
        ("0 9 L * *", "At 09:00, on the last day of the month"),
        ("0 9 15W * *", "At 09:00, on the weekday nearest day 15 of the month"),
        ("0 9 * * 1#1", "At 09:00, on the first Monday of the month"),
        ("0 9 * * 1#2", "At 09:00, on the second Monday of the month"),
        ("0 9 * * L5", "At 09:00, on the last Friday of the month"),  # croniter's spelling
        ("0 9 * * 5L", "At 09:00, on the last Friday of the month"),  # Quartz's spelling
        ("0 9 24 12 *", "At 09:00, on day 24 of the month, only in December"),
        ("0 9 24 dec *", "At 09:00, on day 24 of the month, only in December"),
        ("0 9 * jan-mar,sep *", "At 09:00, only in January through March and September"),
        ("0 0 L 2 *", "At 00:00, on the last day of the month, only in February"),
        ("0 9 13 * 5", "At 09:00, on day 13 of the month, or on Friday"),  # cron fires on either
        ("0 9 1 3 1", "At 09:00, on day 1 of the month, or on Monday, only in March"),
        ("@daily", "At 00:00"),
        ("@midnight", "At 00:00"),
        (" @Weekly ", "At 00:00, only on Sunday"),
        ("@monthly", "At 00:00, on day 1 of the month"),
        ("@yearly", "At 00:00, on day 1 of the month, only in January"),
        ("@annually", "At 00:00, on day 1 of the month, only in January"),
        ("@hourly", "Every hour"),
    ],
)
def test_describe(cron: str, words: str) -> None:
    assert describe(cron) == words


@pytest.mark.parametrize(
    "cron",
    [
        "*/7 * * * *",  # 0, 7, ..., 56, then 0 again: not "every 7 minutes"
        "0 */5 * * *",  # likewise not "every 5 hours"
        "*/7 * * * * *",  # nor "every 7 seconds"
        "0 9 1,L * *",  # cron_descriptor says "on day 1 and L of the month"
        "0 9 * * 1#1,1#3",  # and "on the  Monday and Monday of the month"
    ],
)
def test_describe_falls_back_to_the_expression(cron: str) -> None:
    assert describe(cron) == f"cron: {cron}"


def test_describe_falls_back_when_the_describer_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("describer bug")

    monkeypatch.setattr("cron_descriptor.ExpressionDescriptor", broken)  # human.describe imports it when called
    assert describe("0  9 * * 1-5") == "cron: 0 9 * * 1-5"


@pytest.mark.parametrize(
    "cron", ["0 9 * *", "61 * * * *", "0 9 31 2 *", "not a cron", "0 0 9 * * * *", "60 * * * * *", "@reboot"]
)
def test_describe_rejects_invalid_cron(cron: str) -> None:
    with pytest.raises(InvalidSchedule):
        describe(cron)


@pytest.mark.parametrize(
    ("phrase", "words"),
    [
        ("weekdays at 9:15am", "At 09:15, Monday through Friday"),
        ("every mon, wed and fri at 6:30pm", "At 18:30, only on Monday, Wednesday, and Friday"),
        ("last day of each month at 5pm", "At 17:00, on the last day of the month"),
        ("every year on december 24 at 9am", "At 09:00, on day 24 of the month, only in December"),
        ("first monday of each month at 9am", "At 09:00, on the first Monday of the month"),
        ("last friday of each month at 5pm", "At 17:00, on the last Friday of the month"),
        ("every 30 seconds", "Every 30 seconds"),
        ("every second", "Every second"),
    ],
)
def test_phrase_described_back(phrase: str, words: str) -> None:
    assert describe(compile_phrase(phrase)) == words


@pytest.mark.parametrize("phrase", EXAMPLES)
def test_examples_are_described_in_words(phrase: str) -> None:
    assert not describe(compile_phrase(phrase)).startswith("cron:")


def test_examples_stay_few() -> None:
    assert len(EXAMPLES) <= 12
