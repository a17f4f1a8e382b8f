"""Tests of lrml.slots on constructed attention and on a synthetic loaded run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lrml import slots as slots_module
from lrml.attention import pair_weights
from lrml.config import TrainConfig
from lrml.data import Dataset
from lrml.inference import LoadedRun, load_run
from lrml.model import LRML
from lrml.runs import create_run
from lrml.slots import (
    CACHE_FOLDER,
    NO_GENRE_NAME,
    cached_slot_statistics,
    compute_slot_statistics,
    slot_statistics,
)
from lrml.split import leave_one_out

GENRES = ["Comedy", "Drama", "Horror"]


def constructed_pairs(seed: int = 0):
    """Build 600 pairs where slot 0 attends to Horror rated 5 and slot 1 to Comedy
    rated 1; slot 2 gets an even share everywhere.

    Items 0-9 are Horror, 10-19 Comedy and 20-29 Drama. Users 0-29 rate every
    genre, and user 0 rates Horror movies more often than anyone.
    """
    rng = np.random.default_rng(seed)
    n_pairs = 600
    items = rng.integers(0, 30, size=n_pairs)
    users = rng.integers(0, 30, size=n_pairs)
    users[items < 10] = np.where(
        rng.random((items < 10).sum()) < 0.5, 0, users[items < 10]
    )
    ratings = np.full(n_pairs, 3.0)
    ratings[items < 10] = 5.0
    ratings[(items >= 10) & (items < 20)] = 1.0

    weights = np.full((n_pairs, 3), 0.2)
    weights[items < 10] = [0.7, 0.1, 0.2]
    weights[(items >= 10) & (items < 20)] = [0.1, 0.7, 0.2]
    weights[items >= 20] = [0.4, 0.4, 0.2]
    weights += rng.uniform(0, 0.01, size=weights.shape)
    weights /= weights.sum(axis=1, keepdims=True)

    genre_matrix = np.zeros((30, 3), dtype=bool)
    genre_matrix[:10, 2] = True
    genre_matrix[10:20, 0] = True
    genre_matrix[20:, 1] = True
    return weights, users, items, ratings, genre_matrix


def test_top_genre_names_slot():
    weights, users, items, ratings, genre_matrix = constructed_pairs()

    stats = compute_slot_statistics(
        weights, users, items, ratings, genre_matrix, GENRES, top_fraction=0.2
    )

    assert stats.slots.loc[0, "name"] == "Horror"
    assert stats.slots.loc[1, "name"] == "Comedy"
    assert stats.label(0) == "slot 0: Horror"
    horror = stats.genres[
        (stats.genres["slot"] == 0) & (stats.genres["genre"] == "Horror")
    ]
    base = (items < 10).mean()
    assert horror["share"].iloc[0] == pytest.approx(1.0)
    assert horror["lift"].iloc[0] == pytest.approx(1.0 / base)


def test_mean_rating_follows_attention():
    weights, users, items, ratings, genre_matrix = constructed_pairs()

    stats = compute_slot_statistics(
        weights, users, items, ratings, genre_matrix, GENRES, top_fraction=0.2
    )

    slots = stats.slots.set_index("slot")
    assert stats.overall_mean_rating == pytest.approx(ratings.mean())
    assert slots.loc[0, "mean_rating"] == pytest.approx(5.0)
    assert slots.loc[1, "mean_rating"] == pytest.approx(1.0)
    assert slots.loc[0, "rating_difference"] == pytest.approx(5.0 - ratings.mean())
    assert slots.loc[0, "rating_correlation"] > 0.8
    assert slots.loc[1, "rating_correlation"] < -0.8
    assert (slots["pairs"] == 120).all()
    assert slots["dominant_pairs"].sum() == len(weights)


def test_mean_weight_matches_columns():
    weights, users, items, ratings, genre_matrix = constructed_pairs()

    stats = compute_slot_statistics(
        weights, users, items, ratings, genre_matrix, GENRES
    )

    np.testing.assert_allclose(stats.slots["mean_weight"], weights.mean(axis=0))
    assert stats.slots["mean_weight"].sum() == pytest.approx(1.0)
    assert stats.mean_max_weight == pytest.approx(weights.max(axis=1).mean())


def test_slot_without_supported_genre_is_mixed():
    weights, users, items, ratings, genre_matrix = constructed_pairs()

    # No genre reaches 1000 pairs in a set of 120, so none may name a slot.
    stats = compute_slot_statistics(
        weights, users, items, ratings, genre_matrix, GENRES, min_pairs=1000
    )

    assert stats.slots.loc[2, "name"] == NO_GENRE_NAME


def test_top_movies_and_users_per_slot():
    weights, users, items, ratings, genre_matrix = constructed_pairs()

    stats = compute_slot_statistics(
        weights, users, items, ratings, genre_matrix, GENRES, min_pairs=5, top_n=3
    )

    horror_movies = stats.movies[stats.movies["slot"] == 0]
    assert list(horror_movies["rank"]) == [1, 2, 3]
    assert (horror_movies["item_index"] < 10).all()
    assert (horror_movies["pairs"] >= 5).all()
    assert horror_movies["mean_weight"].is_monotonic_decreasing
    horror_users = stats.users[stats.users["slot"] == 0]
    assert horror_users["user_index"].iloc[0] == 0


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("top_fraction", 0.0, r"top_fraction must be in \(0, 1\]; got 0.0"),
        ("top_fraction", 1.5, r"top_fraction must be in \(0, 1\]; got 1.5"),
        ("min_pairs", 0, "min_pairs must be an integer of at least 1; got 0"),
        ("top_n", 2.5, "top_n must be an integer of at least 1; got 2.5"),
    ],
)
def test_invalid_setting_is_rejected(setting, value, message):
    weights, users, items, ratings, genre_matrix = constructed_pairs()

    with pytest.raises(ValueError, match=message):
        compute_slot_statistics(
            weights, users, items, ratings, genre_matrix, GENRES, **{setting: value}
        )


def test_mismatched_arrays_are_rejected():
    weights, users, items, ratings, genre_matrix = constructed_pairs()

    with pytest.raises(ValueError, match="got 600 weight rows, 599 users"):
        compute_slot_statistics(
            weights, users[1:], items, ratings, genre_matrix, GENRES
        )


@pytest.fixture
def loaded(tmp_path, interactions) -> LoadedRun:
    """A run with random weights over the synthetic interactions, loaded from disk."""
    item_ids = np.sort(interactions["item_id"].unique())
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": [f"Movie {item_id}" for item_id in item_ids],
            "year": pd.array([1990] * len(item_ids), "Int64"),
            "genres": [GENRES[i % 3] for i in range(len(item_ids))],
        }
    )
    user_ids = np.sort(interactions["user_id"].unique())
    users = pd.DataFrame(
        {
            "user_id": user_ids,
            "age": pd.array([30] * len(user_ids), "Int64"),
            "gender": "F",
            "occupation": "writer",
            "zip_code": "00000",
        }
    )
    dataset = Dataset("ml-100k", interactions, items, users, "synthetic")
    split = leave_one_out(interactions)
    run = create_run(TrainConfig(embedding_dim=8, memory_size=4), root=tmp_path)
    run.save_vocabularies(split.user_vocab, split.item_vocab)
    generator = torch.Generator().manual_seed(9)
    model = LRML(
        split.n_users, split.n_items, 8, 4, init_scale=0.8, generator=generator
    )
    run.save_weights(model)
    return load_run(run.path, dataset=dataset)


def test_slot_statistics_of_loaded_run(loaded):
    split = loaded.split

    stats = slot_statistics(loaded, top_fraction=0.25, min_pairs=2, top_n=3)

    weights = pair_weights(loaded.model, split.train_users, split.train_items)
    np.testing.assert_allclose(
        stats.slots["mean_weight"], weights.mean(axis=0), rtol=1e-5
    )
    assert stats.n_pairs == len(split.train_users)
    assert stats.overall_mean_rating == pytest.approx(split.train_ratings.mean())
    assert {"item_id", "title", "genres"} <= set(stats.movies.columns)
    assert {"user_id", "age", "occupation"} <= set(stats.users.columns)
    assert stats.movies["item_id"].notna().all()
    assert stats.users["user_id"].notna().all()


def test_cache_round_trip_skips_computation(loaded, monkeypatch):
    first = cached_slot_statistics(loaded, top_n=3)
    folders = list((loaded.run.path / CACHE_FOLDER).iterdir())

    def fail(*args, **kwargs):
        raise AssertionError("computed again despite a cached result")

    monkeypatch.setattr(slots_module, "slot_statistics", fail)
    second = cached_slot_statistics(loaded, top_n=3)

    assert len(folders) == 1
    assert sorted(path.name for path in folders[0].iterdir()) == [
        "genres.parquet",
        "movies.parquet",
        "slots.parquet",
        "users.parquet",
    ]
    pd.testing.assert_frame_equal(second.slots, first.slots, check_dtype=False)
    pd.testing.assert_frame_equal(second.movies, first.movies, check_dtype=False)
    assert second.overall_mean_rating == first.overall_mean_rating
    assert second.n_pairs == first.n_pairs
    assert second.mean_max_weight == first.mean_max_weight
    assert second.min_pairs == first.min_pairs == 10


def test_cache_keys_on_weights_and_settings(loaded):
    cached_slot_statistics(loaded, top_n=3)
    cached_slot_statistics(loaded, top_n=4)
    model = loaded.run.load_model()
    with torch.no_grad():
        model.keys.mul_(2.0)
    loaded.run.save_weights(model)
    cached_slot_statistics(load_run(loaded.run.path, dataset=loaded.dataset), top_n=3)

    assert len(list((loaded.run.path / CACHE_FOLDER).iterdir())) == 3


def test_cache_keeps_newest_entries(loaded, monkeypatch):
    monkeypatch.setattr(slots_module, "CACHE_KEEP", 2)
    for top_n in (1, 2, 3):
        cached_slot_statistics(loaded, top_n=top_n)
    folders = list((loaded.run.path / CACHE_FOLDER).iterdir())

    def fail(*args, **kwargs):
        raise AssertionError("computed again")

    monkeypatch.setattr(slots_module, "slot_statistics", fail)

    assert len(folders) == 2
    cached_slot_statistics(loaded, top_n=3)
    with pytest.raises(AssertionError, match="computed again"):
        cached_slot_statistics(loaded, top_n=1)


def test_unwritable_cache_still_returns_stats(loaded, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")

    stats = cached_slot_statistics(loaded, cache_dir=blocker / "cache", top_n=2)

    assert len(stats.slots) == 4
