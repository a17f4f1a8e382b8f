"""Tests for lrml.split: leave-one-out by timestamp, vocabularies and matrices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lrml.split import Split, build_vocabularies, leave_one_out
from lrml.vocab import Vocabulary

# (user_id, item_id, rating, timestamp). Per user:
# 1: four items at distinct times, so 40 is test and 30 validation.
# 2: items 10 and 20 share the latest time, so 20 (the larger id) is test.
# 3: two items only, so the user stays in training.
# 4: item 10 twice, and the later row (rating 4, time 2) is kept in training.
# 5: three rows but only two distinct items, so the user stays in training.
ROWS = [
    (1, 10, 5.0, 100),
    (1, 20, 4.0, 200),
    (1, 30, 3.0, 300),
    (1, 40, 2.0, 400),
    (2, 10, 1.0, 100),
    (2, 20, 2.0, 100),
    (2, 30, 3.0, 50),
    (3, 10, 4.0, 5),
    (3, 20, 4.0, 6),
    (4, 10, 1.0, 1),
    (4, 10, 4.0, 2),
    (4, 20, 3.0, 5),
    (4, 30, 3.0, 6),
    (5, 10, 2.0, 5),
    (5, 20, 2.0, 6),
    (5, 10, 3.0, 1),
]


def _frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


@pytest.fixture
def hand_split() -> Split:
    return leave_one_out(_frame(ROWS))


def _external_pairs(split: Split, users, items) -> list[tuple[int, int]]:
    return sorted(
        zip(split.user_vocab.externals(users), split.item_vocab.externals(items))
    )


def _train_items_of(split: Split, user_id: int) -> list[int]:
    user = split.user_vocab.index(user_id)
    return sorted(
        split.item_vocab.externals(split.train_items[split.train_users == user])
    )


def test_latest_is_test(hand_split):
    pairs = _external_pairs(hand_split, hand_split.test_users, hand_split.test_items)

    assert (1, 40) in pairs


def test_second_latest_is_validation(hand_split):
    pairs = _external_pairs(
        hand_split, hand_split.validation_users, hand_split.validation_items
    )

    assert (1, 30) in pairs


def test_older_interactions_are_training(hand_split):
    assert _train_items_of(hand_split, 1) == [10, 20]


def test_timestamp_tie_larger_item_later(hand_split):
    test = _external_pairs(hand_split, hand_split.test_users, hand_split.test_items)
    validation = _external_pairs(
        hand_split, hand_split.validation_users, hand_split.validation_items
    )

    assert (2, 20) in test
    assert (2, 10) in validation
    assert _train_items_of(hand_split, 2) == [30]


def test_short_history_training_only(hand_split):
    evaluated = set(hand_split.user_vocab.externals(hand_split.test_users))

    assert 3 not in evaluated
    assert _train_items_of(hand_split, 3) == [10, 20]


def test_duplicates_not_counted_twice(hand_split):
    evaluated = set(hand_split.user_vocab.externals(hand_split.test_users))

    assert 5 not in evaluated
    assert _train_items_of(hand_split, 5) == [10, 20]


def test_duplicate_pair_keeps_latest_row(hand_split):
    user = hand_split.user_vocab.index(4)
    rows = np.flatnonzero(hand_split.train_users == user)

    assert len(rows) == 1
    assert hand_split.item_vocab.external(hand_split.train_items[rows[0]]) == 10
    assert hand_split.train_ratings[rows[0]] == 4.0
    assert hand_split.train_timestamps[rows[0]] == 2


def test_repeated_item_becomes_test_item():
    rows = [(1, 10, 1.0, 1), (1, 20, 1.0, 2), (1, 30, 1.0, 3), (1, 10, 5.0, 4)]

    split = leave_one_out(_frame(rows))

    assert split.item_vocab.externals(split.test_items) == [10]
    assert split.item_vocab.externals(split.validation_items) == [30]
    assert split.item_vocab.externals(split.train_items) == [20]


def test_held_out_sorted_by_user(hand_split):
    assert hand_split.test_users.tolist() == sorted(hand_split.test_users.tolist())
    assert np.array_equal(hand_split.test_users, hand_split.validation_users)


def test_row_order_does_not_matter(interactions):
    reference = leave_one_out(interactions)

    for seed in range(3):
        shuffled = interactions.sample(frac=1.0, random_state=seed)
        split = leave_one_out(shuffled)
        assert np.array_equal(split.test_items, reference.test_items)
        assert np.array_equal(split.validation_items, reference.validation_items)
        assert sorted(zip(split.train_users, split.train_items)) == sorted(
            zip(reference.train_users, reference.train_items)
        )


def test_matches_sorted_reference(interactions, split):
    ordered = interactions.sort_values(["user_id", "timestamp", "item_id"])
    grouped = ordered.groupby("user_id")["item_id"]
    counts = grouped.size()
    evaluated = counts[counts >= 3].index
    expected_test = grouped.nth(-1).groupby(ordered["user_id"]).first()
    expected_validation = grouped.nth(-2).groupby(ordered["user_id"]).first()

    test_users = split.user_vocab.externals(split.test_users)
    validation_users = split.user_vocab.externals(split.validation_users)

    assert test_users == sorted(evaluated)
    assert validation_users == sorted(evaluated)
    assert split.item_vocab.externals(split.test_items) == [
        expected_test[user] for user in test_users
    ]
    assert split.item_vocab.externals(split.validation_items) == [
        expected_validation[user] for user in validation_users
    ]


def test_every_pair_in_one_part(interactions, split):
    train = set(zip(split.train_users.tolist(), split.train_items.tolist()))
    validation = set(
        zip(split.validation_users.tolist(), split.validation_items.tolist())
    )
    test = set(zip(split.test_users.tolist(), split.test_items.tolist()))

    assert len(train) == len(split.train_users)
    assert train.isdisjoint(validation)
    assert train.isdisjoint(test)
    assert validation.isdisjoint(test)
    assert len(train) + len(validation) + len(test) == len(interactions)


def test_synthetic_has_training_only_users(interactions, split):
    training_only = split.n_users - len(split.test_users)

    assert training_only == (interactions.groupby("user_id").size() < 3).sum()
    assert training_only > 0


def test_empty_interactions_rejected():
    with pytest.raises(ValueError, match="cannot split an empty interaction table"):
        leave_one_out(_frame([]))


def test_vocabularies_sorted_unique():
    users, items = build_vocabularies(_frame(ROWS))

    assert users.ids == [1, 2, 3, 4, 5]
    assert items.ids == [10, 20, 30, 40]
    assert users.kind == "user"
    assert items.kind == "item"


def test_given_vocabularies_used():
    users = Vocabulary([5, 4, 3, 2, 1], kind="user")
    items = Vocabulary([40, 30, 20, 10], kind="item")

    split = leave_one_out(_frame(ROWS), users, items)

    assert split.user_vocab is users
    assert split.item_vocab is items
    assert split.n_users == 5
    assert split.user_vocab.index(1) == 4
    assert split.item_vocab.index(40) == 0
    assert (1, 40) in _external_pairs(split, split.test_users, split.test_items)


def test_given_vocabulary_tie_by_item_id():
    users = Vocabulary([1, 2, 3, 4, 5], kind="user")
    items = Vocabulary([40, 30, 20, 10], kind="item")

    split = leave_one_out(_frame(ROWS), users, items)

    assert (2, 20) in _external_pairs(split, split.test_users, split.test_items)


def test_given_vocabulary_missing_id():
    users = Vocabulary([1, 2, 3, 4], kind="user")
    items = Vocabulary([10, 20, 30, 40], kind="item")

    with pytest.raises(ValueError, match="is not in the user vocabulary"):
        leave_one_out(_frame(ROWS), users, items)


def test_missing_id_message_plain_number():
    users = Vocabulary([1, 2, 3, 4], kind="user")
    items = Vocabulary([10, 20, 30, 40], kind="item")

    with pytest.raises(ValueError, match="^user 5 is not in the user vocabulary"):
        leave_one_out(_frame(ROWS), users, items)


def test_train_matrix_is_binary(hand_split):
    matrix = hand_split.train_matrix()

    assert matrix.shape == (5, 4)
    assert set(matrix.data.tolist()) == {1.0}
    assert matrix.nnz == len(hand_split.train_users)


def test_train_matrix_marks_training_pairs(split):
    matrix = split.train_matrix().toarray()

    assert matrix[split.train_users, split.train_items].all()
    assert matrix.sum() == len(split.train_users)


def test_validation_known_is_training(split):
    known = split.known_matrix("validation")

    assert (known != split.train_matrix()).nnz == 0


def test_test_known_adds_validation(split):
    known = split.known_matrix("test").toarray()

    assert known[split.validation_users, split.validation_items].all()
    assert not known[split.test_users, split.test_items].any()
    assert known.sum() == len(split.train_users) + len(split.validation_users)


def test_known_matrix_rejects_stage(split):
    with pytest.raises(
        ValueError, match="stage must be 'validation', 'test' or 'all'; got 'train'"
    ):
        split.known_matrix("train")


def test_known_matrix_all_adds_test(split):
    everything = split.known_matrix("all")
    before_test = split.known_matrix("test")

    assert everything.nnz == before_test.nnz + len(split.test_users)
    assert everything[split.test_users, split.test_items].min() == 1.0


def test_held_out_per_stage(split):
    assert split.held_out("validation")[1] is split.validation_items
    assert split.held_out("test")[1] is split.test_items


def test_held_out_rejects_stage(split):
    with pytest.raises(
        ValueError, match="stage must be 'validation' or 'test'; got 'dev'"
    ):
        split.held_out("dev")


def test_ml100k_every_user_evaluated(ml100k, ml100k_split):
    assert ml100k_split.n_users == 943
    assert ml100k_split.n_items == 1682
    assert len(ml100k_split.test_users) == 943
    assert len(ml100k_split.train_users) == len(ml100k.interactions) - 2 * 943
