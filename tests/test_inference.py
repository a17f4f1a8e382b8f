"""Tests of lrml.inference on a run with random weights over synthetic data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from lrml.config import TrainConfig
from lrml.data import Dataset
from lrml.inference import (
    MAX_K,
    LoadedRun,
    compare_top_k,
    find_users,
    genre_mix,
    history,
    load_run,
    recommend,
    similar_items,
)
from lrml.model import LRML
from lrml.runs import create_run
from lrml.split import leave_one_out

GENRE_CYCLE = ["Drama", "Comedy|Drama", "Horror", "Film-Noir|Horror", ""]
# A person in users without any rating: the model has no row for them.
USER_WITHOUT_RATINGS = 9999


@pytest.fixture
def loaded(tmp_path, interactions) -> LoadedRun:
    """A run with random weights over the synthetic interactions, loaded from disk."""
    item_ids = np.sort(interactions["item_id"].unique())
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": [f"Movie {item_id}" for item_id in item_ids],
            "year": pd.array([1990 + item_id % 10 for item_id in item_ids], "Int64"),
            "genres": [GENRE_CYCLE[i % len(GENRE_CYCLE)] for i in range(len(item_ids))],
        }
    )
    user_ids = [*np.sort(interactions["user_id"].unique()), USER_WITHOUT_RATINGS]
    users = pd.DataFrame(
        {
            "user_id": user_ids,
            "age": pd.array(
                [18 + i for i in range(len(user_ids) - 1)] + [None], "Int64"
            ),
            "gender": ["F" if i % 2 else "M" for i in range(len(user_ids))],
            "occupation": [
                "writer" if i % 3 else "doctor" for i in range(len(user_ids))
            ],
            "zip_code": "00000",
        }
    )
    dataset = Dataset("ml-100k", interactions, items, users, "synthetic")
    split = leave_one_out(interactions)
    run = create_run(TrainConfig(embedding_dim=8, memory_size=4), root=tmp_path)
    run.save_vocabularies(split.user_vocab, split.item_vocab)
    generator = torch.Generator().manual_seed(3)
    run.save_weights(LRML(split.n_users, split.n_items, 8, 4, generator=generator))
    return load_run(run.path, dataset=dataset)


def test_recommend_excludes_seen_movies(loaded):
    top = recommend(loaded, 4, k=10)

    assert list(top["rank"]) == list(range(1, 11))
    assert not top["seen"].any()
    assert top["score"].is_monotonic_decreasing
    np.testing.assert_allclose(top["distance_with_relation"], -top["score"])


def test_recommend_keeps_seen_movies_on_request(loaded):
    seen = set(loaded.known[4].indices)

    top = recommend(loaded, 4, k=loaded.split.n_items, exclude_seen=False)

    assert set(top.loc[top["seen"], "item_index"]) == seen


def test_recommend_filters_by_genre(loaded):
    top = recommend(loaded, 4, k=loaded.split.n_items, genres=["Horror"])

    assert len(top) > 0
    assert top["genres"].str.contains("Horror").all()
    horror = loaded.genre_matrix[:, loaded.genres.index("Horror")]
    unseen = ~np.isin(np.arange(loaded.split.n_items), loaded.known[4].indices)
    assert len(top) == int((horror & unseen).sum())


def test_recommend_rejects_unknown_genre(loaded):
    with pytest.raises(ValueError, match=r"unknown genre\(s\) 'Opera'; use one of"):
        recommend(loaded, 4, genres=["Opera"])


def test_recommend_rejects_k_over_catalogue(loaded):
    n_items = loaded.split.n_items

    with pytest.raises(ValueError, match=f"larger than the catalogue of {n_items}"):
        recommend(loaded, 4, k=n_items + 1)


@pytest.mark.parametrize("k", [0, MAX_K + 1, 2.5, True])
def test_recommend_rejects_invalid_k(loaded, k):
    with pytest.raises(ValueError, match=f"k must be an integer from 1 to {MAX_K}"):
        recommend(loaded, 4, k=k)


def test_recommend_rejects_user_without_training(loaded):
    counts = loaded.train_counts.copy()
    counts[6] = 0
    untrained = dataclasses.replace(loaded)
    # cached_property stores its value in the instance dict, so this overrides it.
    untrained.__dict__["train_counts"] = counts
    user_id = loaded.split.user_vocab.external(6)

    with pytest.raises(ValueError, match=f"user {user_id} has no training history"):
        recommend(untrained, 6)


def test_recommend_reports_user_who_saw_every_genre_movie(loaded):
    noir = loaded.genre_matrix[:, loaded.genres.index("Film-Noir")]
    known = loaded.known.tolil()
    known[4, np.flatnonzero(noir)] = 1.0
    saw_noir = dataclasses.replace(loaded)
    saw_noir.__dict__["known"] = known.tocsr()
    user_id = loaded.split.user_vocab.external(4)

    with pytest.raises(ValueError, match=f"user {user_id} has seen every movie of"):
        recommend(saw_noir, 4, genres=["Film-Noir"])


def test_similar_items_are_nearest_in_space(loaded):
    with torch.inference_mode():
        vectors = loaded.model.items(torch.arange(loaded.split.n_items)).numpy()
    distances = np.linalg.norm(vectors - vectors[5], axis=1)
    distances[5] = np.inf

    similar = similar_items(loaded, 5, k=4)

    assert list(similar["item_index"]) == list(np.argsort(distances)[:4])
    np.testing.assert_allclose(similar["distance"], np.sort(distances)[:4], rtol=1e-5)
    assert 5 not in set(similar["item_index"])
    assert list(similar["rank"]) == [1, 2, 3, 4]


def test_similar_items_rejects_unknown_item(loaded):
    with pytest.raises(IndexError, match="item index -1 is outside"):
        similar_items(loaded, -1)


def test_compare_top_k_marks_overlap(loaded):
    first = recommend(loaded, 2, k=5)
    second = recommend(loaded, 2, k=8)

    joined = compare_top_k(first, second)

    assert len(joined) == 8
    assert joined["in_both"].sum() == 5
    assert list(joined["rank_first"].head(5)) == [1, 2, 3, 4, 5]
    assert joined["rank_first"].tail(3).isna().all()


def test_find_users_filters_demographics(loaded):
    found = find_users(
        loaded, min_age=20, max_age=40, genders=["F"], occupations=["doctor"]
    )

    assert len(found) > 0
    assert found["age"].between(20, 40).all()
    assert (found["gender"] == "F").all()
    assert (found["occupation"] == "doctor").all()


def test_find_users_skips_users_without_ratings(loaded):
    everyone = loaded.users

    found = find_users(loaded)

    assert USER_WITHOUT_RATINGS in set(everyone["user_id"])
    assert USER_WITHOUT_RATINGS not in set(found["user_id"])
    no_ratings = everyone[everyone["user_id"] == USER_WITHOUT_RATINGS].iloc[0]
    assert no_ratings["user_index"] == -1
    assert no_ratings["ratings"] == 0


def test_find_users_orders_by_activity(loaded):
    most = find_users(loaded, order="most_active")
    least = find_users(loaded, order="least_active")

    assert most["ratings"].is_monotonic_decreasing
    assert least["ratings"].is_monotonic_increasing
    counts = loaded.dataset.interactions["user_id"].value_counts()
    assert most["ratings"].iloc[0] == counts.max()


def test_find_users_rejects_bad_arguments(loaded):
    with pytest.raises(ValueError, match="order must be one of"):
        find_users(loaded, order="newest")
    with pytest.raises(ValueError, match="min_age must not exceed max_age; got 50"):
        find_users(loaded, min_age=50, max_age=20)


def test_genre_mix_counts_each_genre(loaded):
    # Items 0, 1 and 4 of the cycle: Drama, Comedy|Drama and no genre.
    item_ids = [loaded.split.item_vocab.external(i) for i in (0, 1, 4)]
    past = pd.DataFrame({"item_id": item_ids, "rating": [5.0, 3.0, 1.0]})

    mix = genre_mix(loaded, past).set_index("genre")

    assert list(mix.index) == ["Drama", "Comedy"]
    assert mix.loc["Drama", "movies"] == 2
    assert mix.loc["Drama", "mean_rating"] == pytest.approx(4.0)
    assert mix.loc["Comedy", "mean_rating"] == pytest.approx(3.0)
    assert mix.loc["Comedy", "share"] == pytest.approx(1 / 3)


def test_history_lists_every_rating(loaded, interactions):
    user_id = loaded.split.user_vocab.external(3)

    past = history(loaded, 3)

    assert len(past) == int((interactions["user_id"] == user_id).sum())
    assert past["part"].isin(["train", "validation", "test"]).all()
