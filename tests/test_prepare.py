"""Tests for lrml.prepare: rating thresholds, k-core filtering and statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lrml.dataset import DataError
from lrml.prepare import (
    degree_histogram,
    describe_interactions,
    k_core_filter,
    prepare_interactions,
)


def table(rows):
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return frame.astype({"rating": "float32"})


# Users 1 and 2 rated items 10, 11 and 12; user 3 rated only item 10, and item
# 13 was rated only by user 1. The 2-core drops user 3, then item 13.
CHAIN = table(
    [
        (1, 10, 5.0, 1),
        (1, 11, 4.0, 2),
        (1, 12, 3.0, 3),
        (1, 13, 1.0, 4),
        (2, 10, 4.5, 5),
        (2, 11, 2.0, 6),
        (2, 12, 3.5, 7),
        (3, 10, 0.5, 8),
    ]
)


def test_every_rating_counts_by_default(interactions):
    kept = prepare_interactions(interactions)

    pd.testing.assert_frame_equal(kept, interactions)


def test_min_rating_keeps_ratings_at_threshold():
    kept = prepare_interactions(CHAIN, min_rating=3.5)

    assert kept["rating"].tolist() == [5.0, 4.0, 4.5, 3.5]
    assert kept.index.tolist() == [0, 1, 4, 6]


def test_k_core():
    kept = prepare_interactions(CHAIN, k_core=2)

    assert sorted(kept["user_id"].unique()) == [1, 2]
    assert sorted(kept["item_id"].unique()) == [10, 11, 12]
    assert len(kept) == 6


def test_k_core_cascades():
    # User 4 rated only item 20. Dropping user 4 leaves item 20 with one user,
    # and dropping item 20 then leaves user 3 with one item.
    rows = CHAIN.to_numpy().tolist() + [(3, 20, 1.0, 9), (4, 20, 1.0, 10)]
    kept = k_core_filter(table(rows), 2)

    assert sorted(kept["user_id"].unique()) == [1, 2]
    assert 20 not in kept["item_id"].tolist()


def test_k_core_counts_repeated_pairs_once():
    repeated = table([(1, 10, 5.0, 1), (1, 10, 4.0, 2), (2, 11, 3.0, 3)])

    assert k_core_filter(repeated, 2).empty


def test_k_core_of_one_keeps_everything():
    assert len(prepare_interactions(CHAIN, k_core=1)) == len(CHAIN)


def test_threshold_then_k_core():
    kept = prepare_interactions(CHAIN, min_rating=2.0, k_core=2)

    assert sorted(kept["item_id"].unique()) == [10, 11, 12]
    assert 3 not in kept["user_id"].tolist()


def test_nothing_left():
    with pytest.raises(
        DataError,
        match=r"^No interactions are left after keeping ratings >= 9, out of 8\.",
    ):
        prepare_interactions(CHAIN, min_rating=9.0)

    with pytest.raises(
        DataError,
        match=r"after keeping ratings >= 4\.5 and the 2-core, out of 8\. Lower",
    ):
        prepare_interactions(CHAIN, min_rating=4.5, k_core=2)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_rating": float("nan")}, r"min_rating must be a finite number or None"),
        ({"min_rating": "4"}, r"min_rating must be a finite number or None; got '4'"),
        ({"k_core": 0}, r"k_core must be an integer from 1 to 10000 or None; got 0"),
        ({"k_core": 2.5}, r"k_core must be an integer .*got 2\.5"),
        ({"k_core": True}, r"k_core must be an integer .*got True"),
    ],
)
def test_invalid_options(options, message):
    with pytest.raises(ValueError, match=message):
        prepare_interactions(CHAIN, **options)


def test_describe_interactions():
    stats = describe_interactions(CHAIN)

    assert (stats.users, stats.items, stats.interactions) == (3, 4, 8)
    assert stats.density == pytest.approx(8 / 12)
    assert sorted(stats.user_counts.tolist()) == [1, 3, 4]
    assert sorted(stats.item_counts.tolist()) == [1, 2, 2, 3]
    assert stats.rating_counts.index.tolist()[0] == 0.5
    assert stats.rating_counts.sum() == 8


def test_describe_counts_distinct_pairs():
    stats = describe_interactions(table([(1, 10, 5.0, 1), (1, 10, 4.0, 2)]))

    assert stats.interactions == 2
    assert stats.user_counts.tolist() == [1]
    assert stats.density == 1.0


def test_describe_empty():
    stats = describe_interactions(CHAIN.iloc[:0])

    assert (stats.users, stats.items, stats.density) == (0, 0, 0.0)
    assert stats.user_counts.dtype == np.int64


def test_degree_histogram_power_of_two_bins():
    table = degree_histogram(np.array([1, 1, 2, 3, 4, 5, 8, 9, 100]))

    assert table["label"].tolist() == [
        "1",
        "2",
        "3-4",
        "5-8",
        "9-16",
        "17-32",
        "33-64",
        "65-128",
    ]
    assert table["count"].tolist() == [2, 1, 2, 2, 1, 0, 0, 1]


def test_degree_histogram_small_counts():
    assert degree_histogram(np.array([1, 1]))["count"].tolist() == [2]
    assert degree_histogram(np.array([], dtype=np.int64))["count"].tolist() == [0]
