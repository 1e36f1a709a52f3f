"""reminderd.queries: named blocks of sql/queries.sql, with shared fragments included."""

from __future__ import annotations

import pytest

from reminderd.queries import QUERIES, load


def test_blocks_are_split_by_name_without_their_comments() -> None:
    text = "-- one --\n-- says what\nSELECT 1;\n\n-- two --\nSELECT 2;\n"
    assert load(text) == {"one": "SELECT 1", "two": "SELECT 2"}


def test_a_fragment_is_included_with_its_parameters_numbered() -> None:
    text = (
        "-- cols --\na = $first, b = $second, c = $first\n\n"
        "-- q --\nSELECT {cols $3 $7}, '{transactional}' FROM t;\n"
    )
    assert load(text)["q"] == "SELECT a = $3, b = $7, c = $3, '{transactional}' FROM t"


def test_a_fragment_given_the_wrong_number_of_parameters_is_refused() -> None:
    with pytest.raises(ValueError, match=r"cols takes 2 parameters \(\$first \$second\)"):
        load("-- cols --\n$first, $second\n\n-- q --\nSELECT {cols $1};\n")


def test_the_claim_and_the_planner_share_the_timing_columns() -> None:
    for name, parameters in [("claim", ("$4", "$5")), ("recurring_to_plan", ("$3", "$4"))]:
        assert "{timing_columns" not in QUERIES[name]
        assert f"coalesce(m.backfill, {parameters[0]}) AS backfill" in QUERIES[name]
        assert f"::float8, {parameters[1]}) AS max_lateness_s" in QUERIES[name]
