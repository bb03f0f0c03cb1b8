"""The traffic split: which version a request goes to, by percentile."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from router.traffic import TrafficSplit

# Upper 0.1% points of the chi-square distribution by degrees of freedom (scipy is not
# a dependency): a correct sampler fails the test about once in a thousand seeds.
CHI_SQUARE_999 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515}


def test_default_gets_the_unassigned_remainder() -> None:
    split = TrafficSplit.from_percentiles({"blue": 10, "green": 20, "canary": 5}, "blue")
    assert split.weights == (("blue", 75.0), ("green", 20.0), ("canary", 5.0))
    assert split.default == "blue"


def test_no_percentiles_send_everything_to_the_default() -> None:
    split = TrafficSplit.from_percentiles({"v1": 0, "v2": 0}, "v2")
    assert split.weights == (("v1", 0.0), ("v2", 100.0))
    assert {split.choose_version(r) for r in (0.0, 0.5, 0.999999)} == {"v2"}


def test_single_version() -> None:
    split = TrafficSplit.from_percentiles({"only": 0}, "only")
    assert split.choose_version(0.0) == "only"
    assert split.choose_version(math.nextafter(1.0, 0.0)) == "only"


def test_exact_boundaries() -> None:
    split = TrafficSplit.from_percentiles({"a": 90, "b": 10}, "a")
    assert split.choose_version(0.0) == "a"
    assert split.choose_version(math.nextafter(0.9, 0.0)) == "a"
    assert split.choose_version(0.9) == "b"
    assert split.choose_version(math.nextafter(1.0, 0.0)) == "b"


def test_boundaries_with_three_versions_in_given_order() -> None:
    split = TrafficSplit.from_percentiles({"x": 25, "y": 50, "z": 25}, "y")
    assert [split.choose_version(r) for r in (0.0, 0.2499, 0.25, 0.7499, 0.75, 0.9999)] == [
        "x",
        "x",
        "y",
        "y",
        "z",
        "z",
    ]


def test_zero_percent_versions_are_never_chosen_but_can_be_pinned() -> None:
    split = TrafficSplit.from_percentiles({"a": 0, "b": 50, "shadow": 0, "c": 50}, "a")
    rng = random.Random(1)
    chosen = {split.choose_version(rng.random()) for _ in range(10_000)}
    assert chosen == {"b", "c"}
    # Around the boundary that a zero-width range would sit on.
    assert split.choose_version(math.nextafter(0.5, 0.0)) == "b"
    assert split.choose_version(0.5) == "c"
    assert "shadow" in split and "a" in split
    assert "missing" not in split


def test_float_percentiles_summing_to_100() -> None:
    split = TrafficSplit.from_percentiles({"a": 33.3, "b": 33.3, "c": 33.4}, "a")
    assert math.isclose(sum(w for _, w in split.weights), 100)
    assert split.choose_version(math.nextafter(1.0, 0.0)) == "c"


@pytest.mark.parametrize(
    "percentiles",
    [
        {"blue": 90, "green": 10},
        {"a": 50, "b": 30, "c": 20},
        {"a": 0, "b": 1, "c": 0, "d": 4},  # default a gets 95
        {"v1": 16.5, "v2": 16.5, "v3": 16.5, "v4": 16.5, "v5": 16.5, "v6": 17.5},
    ],
)
def test_proportions_chi_square(percentiles: dict[str, float]) -> None:
    default = next(iter(percentiles))
    split = TrafficSplit.from_percentiles(percentiles, default)
    draws = 100_000
    rng = random.Random(20240611)
    counts = Counter(split.choose_version(rng.random()) for _ in range(draws))
    expected = {version: weight / 100 * draws for version, weight in split.weights if weight > 0}
    assert set(counts) == set(expected)
    statistic = sum((counts[v] - e) ** 2 / e for v, e in expected.items())
    assert statistic < CHI_SQUARE_999[len(expected) - 1], (statistic, counts)


def test_chi_square_check_detects_a_wrong_split() -> None:
    """The goodness-of-fit test above would catch a sampler that is off by one point."""
    wrong = TrafficSplit.from_percentiles({"blue": 89, "green": 11}, "blue")
    draws = 100_000
    rng = random.Random(20240611)
    counts = Counter(wrong.choose_version(rng.random()) for _ in range(draws))
    expected = {"blue": 90_000, "green": 10_000}
    statistic = sum((counts[v] - e) ** 2 / e for v, e in expected.items())
    assert statistic > CHI_SQUARE_999[1]


@pytest.mark.parametrize(
    ("percentiles", "default", "message"),
    [
        ({"a": 60, "b": 50}, "a", "add up to 110, more than 100"),
        ({"a": 101}, "a", "'a' must be between 0 and 100, got 101"),
        ({"a": 10, "b": -1}, "a", "'b' must be between 0 and 100, got -1"),
        ({"a": float("nan")}, "a", "'a' must be between 0 and 100"),
        ({"a": 10}, "b", "default version 'b' is not one of the versions"),
        ({}, "a", "default version 'a' is not one of the versions"),
    ],
)
def test_invalid_percentiles(percentiles: dict[str, float], default: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        TrafficSplit.from_percentiles(percentiles, default)


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ValueError, match="sum to 100"):
        TrafficSplit(default="a", weights=(("a", 50.0),))
    with pytest.raises(ValueError, match="listed twice"):
        TrafficSplit(default="a", weights=(("a", 50.0), ("a", 50.0)))


def test_splits_compare_by_value() -> None:
    one = TrafficSplit.from_percentiles({"a": 90, "b": 10}, "a")
    two = TrafficSplit.from_percentiles({"a": 90, "b": 10}, "a")
    assert one == two
    assert one != TrafficSplit.from_percentiles({"a": 80, "b": 20}, "a")
