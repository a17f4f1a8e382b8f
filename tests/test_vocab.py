"""Tests for lrml.vocab: external ids to contiguous indices and back."""

from __future__ import annotations

import numpy as np
import pytest

from lrml.vocab import Vocabulary


@pytest.fixture
def users() -> Vocabulary:
    return Vocabulary([10, 3, 7], kind="user")


def test_index_follows_first_appearance(users):
    assert users.index(10) == 0
    assert users.index(3) == 1
    assert users.index(7) == 2


def test_external_inverts_index(users):
    for external_id in (10, 3, 7):
        assert users.external(users.index(external_id)) == external_id


def test_externals_of_several_indices(users):
    assert users.externals([2, 0]) == [7, 10]


def test_len_counts_ids(users):
    assert len(users) == 3


def test_string_finds_integer_id(users):
    assert users.find("3") == 1


def test_padded_string_finds_integer_id(users):
    assert users.find(" 7 ") == 2


def test_numpy_scalar_finds_id(users):
    assert users.find(np.int64(7)) == 2


def test_numpy_ids_stored_as_python_ints():
    vocab = Vocabulary(np.array([5, 6], dtype=np.int64))

    assert all(type(value) is int for value in vocab.ids)


def test_string_ids_lookup():
    vocab = Vocabulary(["u1", "u2"], kind="user")

    assert vocab.index("u2") == 1


def test_find_unknown_returns_none(users):
    assert users.find(99999) is None
    assert users.find("abc") is None


def test_contains_known_and_unknown(users):
    assert 10 in users
    assert "10" in users
    assert 11 not in users


def test_index_unknown_names_id_and_kind(users):
    with pytest.raises(KeyError, match=r"unknown user 99999: this dataset has 3 users"):
        users.index(99999)


def test_index_unknown_string_names_id(users):
    with pytest.raises(KeyError, match=r"unknown user '42'"):
        users.index("42")


def test_index_unknown_shows_example_ids():
    vocab = Vocabulary(range(1, 11), kind="item")

    with pytest.raises(KeyError, match=r"ids such as 1, 2, 3 \.\.\."):
        vocab.index(0)


def test_indices_array(users):
    indices = users.indices([7, "10", 3])

    assert indices.dtype == np.int64
    assert indices.tolist() == [2, 0, 1]


def test_indices_unknown_raises(users):
    with pytest.raises(KeyError, match="unknown user 5"):
        users.indices([7, 5])


def test_duplicate_ids_rejected():
    with pytest.raises(ValueError, match="item vocabulary contains duplicate ids"):
        Vocabulary([1, 2, 1], kind="item")


def test_equality_depends_on_order():
    assert Vocabulary([1, 2]) == Vocabulary([1, 2])
    assert Vocabulary([1, 2]) != Vocabulary([2, 1])


def test_to_list_round_trip(users):
    assert Vocabulary(users.to_list(), kind="user") == users


def test_ids_returns_copy(users):
    users.ids.append(99)

    assert len(users) == 3
