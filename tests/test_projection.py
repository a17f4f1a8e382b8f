"""Tests of lrml.projection: projections of small and degenerate inputs, the disk
cache, placement of extra points, vector extraction and the points tables."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lrml import projection
from lrml.inference import LoadedRun
from lrml.model import LRML
from lrml.projection import (
    KINDS,
    ProjectionSettings,
    build_points,
    cache_path,
    cached_projection,
    fit_point_limit,
    neighbors_of,
    nonfinite_rows,
    pair_vectors,
    place_points,
    project,
    sample_training_pairs,
    selected_rows,
    user_item_vectors,
)
from lrml.runs import Run
from lrml.split import Split


def clusters(n_per_cluster: int = 20, dim: int = 8, seed: int = 0) -> np.ndarray:
    """Three well separated Gaussian clusters, rows grouped by cluster."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3, dim) * 10.0
    return np.concatenate(
        [centre + rng.normal(size=(n_per_cluster, dim)) for centre in centres]
    ).astype(np.float32)


# project ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["umap", "pca"])
def test_project_empty_input(method):
    result = project(np.zeros((0, 8), np.float32), method=method)

    assert result.coords.shape == (0, 2)


@pytest.mark.parametrize("method", ["umap", "pca"])
def test_project_single_point_at_origin(method):
    result = project(np.ones((1, 8), np.float32), method=method)

    assert result.coords.shape == (1, 2)
    assert np.all(result.coords == 0.0)
    assert result.notes == ("A single vector is drawn at the origin.",)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_project_few_points_falls_back_to_pca(n):
    vectors = np.random.default_rng(n).normal(size=(n, 8)).astype(np.float32)

    result = project(vectors, method="umap", n_neighbors=15)

    assert result.method == "pca"
    assert result.coords.shape == (n, 2)
    assert np.isfinite(result.coords).all()
    assert len(np.unique(result.coords.round(6), axis=0)) == n
    assert f"got {n}, so PCA is shown" in result.notes[0]


def test_project_identical_vectors_at_origin():
    result = project(np.full((10, 8), 0.3, np.float32), method="umap")

    assert np.all(result.coords == 0.0)
    assert result.notes == (
        "All 10 vectors are identical, so every point is at the origin.",
    )


def test_project_few_distinct_vectors_uses_pca():
    distinct = np.random.default_rng(1).normal(size=(3, 8))
    vectors = np.repeat(distinct, 10, axis=0).astype(np.float32)  # (30, 8)

    result = project(vectors, method="umap")

    assert result.method == "pca"
    assert "needs at least 5 distinct vectors and got 3" in result.notes[0]
    # Duplicates of one vector share one position.
    assert np.allclose(result.coords[:10], result.coords[0], atol=1e-5)


def test_project_duplicates_land_together():
    vectors = np.concatenate([clusters(), np.repeat(clusters()[:1], 5, axis=0)])

    result = project(vectors, method="umap", seed=3)

    assert result.method == "umap"
    duplicates = result.coords[-5:]
    spread = np.ptp(result.coords, axis=0).max()
    assert np.ptp(duplicates, axis=0).max() < 0.1 * spread


def test_project_lowers_n_neighbors_to_sample():
    vectors = np.random.default_rng(2).normal(size=(8, 8)).astype(np.float32)

    result = project(vectors, method="umap", n_neighbors=50)

    assert result.method == "umap"
    assert result.used["n_neighbors"] == 7
    assert "n_neighbors lowered from 50 to 7" in result.notes[0]
    assert np.isfinite(result.coords).all()


@pytest.fixture(scope="module")
def cluster_map():
    """One UMAP of `clusters`, shared by several tests to save fits."""
    return project(clusters(), method="umap", n_neighbors=10, seed=0)


def test_project_umap_separates_clusters(cluster_map):
    result = cluster_map

    centres = np.stack([result.coords[i * 20 : (i + 1) * 20].mean(0) for i in range(3)])
    within = max(
        np.linalg.norm(result.coords[i * 20 : (i + 1) * 20] - centres[i], axis=1).max()
        for i in range(3)
    )
    between = min(
        np.linalg.norm(centres[i] - centres[j]) for i in range(3) for j in range(i)
    )
    assert between > within


@pytest.mark.parametrize(("pca_from", "expected"), [(10_000, "spectral"), (50, "pca")])
def test_project_large_input_starts_from_pca(monkeypatch, pca_from, expected):
    monkeypatch.setattr(projection, "PCA_INIT_MIN_POINTS", pca_from)

    result = project(clusters(), method="umap", n_neighbors=10)

    assert result.used["init"] == expected
    assert np.isfinite(result.coords).all()


def test_project_tiny_input_starts_at_random():
    vectors = np.random.default_rng(5).normal(size=(8, 4)).astype(np.float32)

    assert project(vectors, method="umap").used["init"] == "random"


def test_project_same_seed_same_map():
    vectors = clusters(seed=4)

    first = project(vectors, method="umap", seed=11)
    second = project(vectors, method="umap", seed=11)

    np.testing.assert_array_equal(first.coords, second.coords)


@pytest.mark.parametrize("method", ["umap", "pca"])
def test_project_three_dimensions(method):
    result = project(clusters(), method=method, n_components=3)

    assert result.coords.shape == (60, 3)
    assert result.used["n_components"] == 3


def test_project_pca_reports_explained_variance():
    result = project(clusters(), method="pca")

    explained = result.used["explained_variance"]
    assert len(explained) == 2
    assert explained[0] >= explained[1] > 0


def test_nonfinite_rows_finds_nan_and_inf():
    vectors = np.zeros((10, 4), np.float32)
    vectors[3, 1] = np.nan
    vectors[7, 0] = -np.inf

    assert nonfinite_rows(vectors).tolist() == [3, 7]


def test_project_rejects_nonfinite_rows():
    vectors = clusters()
    vectors[[3, 7], 0] = [np.nan, np.inf]

    with pytest.raises(ValueError, match=r"2 of 60 vectors hold NaN .* \(rows 3, 7\)"):
        project(vectors, method="pca")


def test_project_rejects_one_dimensional_input():
    with pytest.raises(ValueError, match=r"must be a 2-D array; got shape \(5,\)"):
        project(np.zeros(5))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"method": "tsne"}, "method must be one of umap, pca; got 'tsne'"),
        ({"n_neighbors": 1}, "n_neighbors must be an integer from 2 to 200; got 1"),
        ({"n_components": 4}, "n_components must be an integer from 2 to 3; got 4"),
        ({"min_dist": 1.0}, r"min_dist must be in \[0, 1\); got 1.0"),
        ({"metric": "hamming"}, "metric must be one of euclidean, cosine, manhattan"),
        ({"seed": -1}, "seed must be an integer from 0 to 2147483647; got -1"),
    ],
)
def test_settings_reject_invalid_values(settings, message):
    with pytest.raises(ValueError, match=message):
        ProjectionSettings(**settings)


# Disk cache -------------------------------------------------------------------


@pytest.fixture
def counted_project(monkeypatch) -> list[str]:
    """Count the calls of `project` made through `cached_projection`."""
    calls: list[str] = []
    original = projection.project

    def counting(vectors, method="umap", **settings):
        calls.append(method)
        return original(vectors, method=method, **settings)

    monkeypatch.setattr(projection, "project", counting)
    return calls


def test_cache_second_call_reads_file(tmp_path, counted_project):
    vectors = clusters(n_per_cluster=6)
    key = {"weights_mtime_ns": 1, "kind": "test"}

    first = cached_projection(tmp_path, key, vectors, method="umap", seed=5)
    files = list(tmp_path.glob("*.parquet"))
    second = cached_projection(tmp_path, key, vectors, method="umap", seed=5)

    assert counted_project == ["umap"]
    assert [path.name for path in files] == [
        cache_path(tmp_path, key, ProjectionSettings(seed=5)).name
    ]
    np.testing.assert_array_equal(first.coords, second.coords)
    assert second.method == "umap"
    assert second.used == first.used


@pytest.mark.parametrize(
    "change",
    [
        {"min_dist": 0.5},
        {"n_neighbors": 5},
        {"metric": "cosine"},
        {"seed": 6},
        {"n_components": 3},
        {"method": "pca"},
    ],
)
def test_cache_setting_change_misses(tmp_path, counted_project, change):
    # PCA ignores the UMAP settings, but its cache key contains every setting.
    vectors = clusters(n_per_cluster=6)
    key = {"weights_mtime_ns": 1}
    method = "umap" if change.get("method") == "pca" else "pca"
    cached_projection(tmp_path, key, vectors, method=method, seed=5)

    cached_projection(tmp_path, key, vectors, **{"method": method, "seed": 5, **change})

    assert len(counted_project) == 2
    assert len(list(tmp_path.glob("*.parquet"))) == 2


def test_cache_key_change_misses(tmp_path, counted_project):
    vectors = clusters()

    cached_projection(tmp_path, {"weights_mtime_ns": 1}, vectors, method="pca")
    cached_projection(tmp_path, {"weights_mtime_ns": 2}, vectors, method="pca")

    assert counted_project == ["pca", "pca"]


def test_cache_with_other_row_count_is_recomputed(tmp_path, counted_project):
    key = {"weights_mtime_ns": 1}
    cached_projection(tmp_path, key, clusters(), method="pca")

    result = cached_projection(tmp_path, key, clusters()[:30], method="pca")

    assert counted_project == ["pca", "pca"]
    assert result.coords.shape == (30, 2)


def test_cache_unreadable_file_is_recomputed(tmp_path, counted_project):
    key = {"weights_mtime_ns": 1}
    path = cache_path(tmp_path, key, ProjectionSettings(method="pca"))
    path.write_text("not parquet")

    result = cached_projection(tmp_path, key, clusters(), method="pca")

    assert counted_project == ["pca"]
    assert result.coords.shape == (60, 2)


def test_cache_keeps_notes(tmp_path):
    vectors = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)

    first = cached_projection(tmp_path, {}, vectors, method="umap")
    second = cached_projection(tmp_path, {}, vectors, method="umap")

    assert second.method == "pca"
    assert second.notes == first.notes
    assert len(second.notes) == 1


# Neighbours and placement -----------------------------------------------------


def test_neighbors_of_sorted_with_self_first():
    vectors = clusters()

    indices, distances = neighbors_of(vectors, vectors[25], 5)

    assert indices[0] == 25
    assert distances[0] == pytest.approx(0.0, abs=1e-5)
    assert np.all(np.diff(distances) >= 0)
    assert np.all((indices >= 20) & (indices < 40))


def test_place_points_pca_is_exact():
    vectors = clusters()
    fitted = project(vectors, method="pca")

    placed = place_points(vectors, fitted.coords, vectors[:5], "pca")

    np.testing.assert_allclose(placed, fitted.coords[:5], atol=1e-4)


def test_place_points_umap_exact_match_lands_on_point(cluster_map):
    vectors = clusters()
    fitted = cluster_map

    placed = place_points(vectors, fitted.coords, vectors[[4, 33]], "umap", 10)

    np.testing.assert_allclose(placed, fitted.coords[[4, 33]], atol=1e-6)


def test_place_points_umap_new_point_near_its_cluster(cluster_map):
    vectors = clusters()
    fitted = cluster_map
    new = vectors[40:60].mean(0, keepdims=True)  # the third cluster's centre

    placed = place_points(vectors, fitted.coords, new, "umap", 10)

    centres = np.stack([fitted.coords[i * 20 : (i + 1) * 20].mean(0) for i in range(3)])
    assert np.argmin(np.linalg.norm(centres - placed[0], axis=1)) == 2


def test_place_points_without_fitted_points():
    placed = place_points(np.zeros((0, 4)), np.zeros((0, 2)), np.ones((3, 4)), "umap")

    assert placed.shape == (3, 2)


# Vector extraction ------------------------------------------------------------


@pytest.fixture
def model() -> LRML:
    generator = torch.Generator().manual_seed(0)
    # init_scale 1.0 puts most rows outside the unit ball, so clipping matters.
    return LRML(
        12, 20, embedding_dim=6, memory_size=4, init_scale=1.0, generator=generator
    )


def test_user_item_vectors_shapes_and_clipping(model):
    users, items = user_item_vectors(model)

    assert users.shape == (12, 6)
    assert items.shape == (20, 6)
    assert np.linalg.norm(users, axis=1).max() <= 1.0 + 1e-5
    assert np.linalg.norm(items, axis=1).max() <= 1.0 + 1e-5


def test_pair_vectors_translation_is_p_plus_r(model):
    users = np.array([0, 3, 3, 11])
    items = np.array([5, 0, 19, 7])

    pairs = pair_vectors(model, users, items)

    assert pairs.p.shape == pairs.q.shape == pairs.relation.shape == (4, 6)
    assert pairs.attention.shape == (4, 4)
    np.testing.assert_allclose(pairs.translated, pairs.p + pairs.relation, atol=1e-6)
    memories = model.memories.detach().numpy()
    np.testing.assert_allclose(pairs.relation, pairs.attention @ memories, atol=1e-6)
    np.testing.assert_array_equal(pairs.dominant_slot, pairs.attention.argmax(1))
    np.testing.assert_allclose(pairs.attention.sum(1), 1.0, atol=1e-6)


def test_pair_vectors_distance_matches_model(model):
    users = np.array([1, 2, 4])
    items = np.array([3, 3, 9])

    pairs = pair_vectors(model, users, items)

    with torch.inference_mode():
        expected = model(torch.tensor(users), torch.tensor(items)).numpy()  # (3,)
    distance = np.linalg.norm(pairs.translated - pairs.q, axis=1)
    np.testing.assert_allclose(distance, expected, atol=1e-5)


def test_sample_training_pairs_is_seeded(split):
    first = sample_training_pairs(split, 50, seed=3)
    second = sample_training_pairs(split, 50, seed=3)
    other = sample_training_pairs(split, 50, seed=4)

    assert len(first) == 50
    assert len(np.unique(first)) == 50
    assert np.all(np.diff(first) > 0)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_sample_training_pairs_larger_than_data(split: Split):
    positions = sample_training_pairs(split, 10**6, seed=0)

    np.testing.assert_array_equal(positions, np.arange(len(split.train_users)))


# Plot selection ---------------------------------------------------------------


def test_selected_rows_reads_customdata():
    # Shaped like Streamlit's PlotlySelectionState: scalar and list customdata,
    # a repeat, and a highlight point without customdata.
    selection = {
        "points": [
            {"curve_number": 1, "point_number": 4, "point_index": 4, "customdata": 17},
            {"curve_number": 0, "point_number": 2, "point_index": 2, "customdata": [3]},
            {"curve_number": 1, "point_number": 9, "point_index": 9, "customdata": 17},
            {"curve_number": 5, "point_number": 0, "point_index": 0, "x": 0.1},
        ],
        "point_indices": [4, 2, 9, 0],
        "box": [],
        "lasso": [{"x": [0, 1, 1], "y": [0, 0, 1]}],
    }

    assert selected_rows(selection) == [17, 3]


@pytest.mark.parametrize("selection", [None, {}, {"points": []}, {"points": None}])
def test_selected_rows_empty(selection):
    assert selected_rows(selection) == []


# Points tables ----------------------------------------------------------------


@pytest.fixture(scope="module")
def ml100k_run(tmp_path_factory) -> LoadedRun:
    """An untrained model on the real MovieLens-100K split: shapes, not quality."""
    from lrml.config import TrainConfig
    from lrml.data import load_ml100k
    from lrml.split import leave_one_out

    dataset = load_ml100k()
    split = leave_one_out(dataset.interactions)
    generator = torch.Generator().manual_seed(1)
    model = LRML(split.n_users, split.n_items, 8, 4, generator=generator).eval()
    run = Run(Path(tmp_path_factory.mktemp("points")))
    config = TrainConfig(embedding_dim=8, memory_size=4)
    return LoadedRun(run=run, config=config, model=model, dataset=dataset, split=split)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("users_items", {"user": 943, "movie": 1682}),
        ("users", {"user": 943}),
        ("items", {"movie": 1682}),
        ("relations", {"relation": 3000}),
        ("translated", {"movie": 1682, "p + r": 3000}),
    ],
)
def test_build_points_kinds(ml100k_run, kind, expected):
    points = build_points(ml100k_run, kind, sample_size=3000, seed=0)

    counts = points.frame["kind"].value_counts().to_dict()
    assert counts == expected
    assert points.vectors.shape == (sum(expected.values()), 8)
    assert points.key == {
        "kind": kind,
        "sample_size": 3000,
        "seed": 0,
        "n": len(points.frame),
    }
    assert points.frame["label"].notna().all()
    assert points.frame["hover"].notna().all()


@pytest.mark.parametrize(
    ("kind", "sample_size", "n_items", "expected"),
    [
        ("relations", 20_000, 1682, (3000, None)),
        ("users_items", 2000, 1682, (2000, None)),
        ("translated", 20_000, 1682, (1318, None)),
        ("translated", 500, 1682, (500, None)),
        ("translated", 20_000, 9996, (250, 2750)),
        ("translated", 100, 9996, (100, 2900)),
    ],
)
def test_fit_point_limit(kind, sample_size, n_items, expected):
    assert fit_point_limit(kind, sample_size, n_items, 3000, 250) == expected


def test_fit_point_limit_rejects_small_limit():
    with pytest.raises(ValueError, match="max_points must be above min_pairs=250"):
        fit_point_limit("translated", 1000, 1682, 250, 250)


def test_build_points_samples_movies(ml100k_run):
    points = build_points(
        ml100k_run, "translated", sample_size=300, seed=0, max_movies=700
    )
    movies = points.frame[points.frame["kind"] == "movie"]
    rows = movies["item_index"].to_numpy()
    _, item_vectors = user_item_vectors(ml100k_run.model)

    assert len(movies) == 700
    assert len(points.frame) == 1000
    assert len(np.unique(rows)) == 700
    np.testing.assert_allclose(points.vectors[movies.index], item_vectors[rows])
    assert points.key["max_movies"] == 700


def test_build_points_without_genres(ml100k_run):
    items = ml100k_run.dataset.items.assign(genres=None)
    loaded = replace(ml100k_run, dataset=replace(ml100k_run.dataset, items=items))

    points = build_points(loaded, "users_items", sample_size=5000, seed=0)
    frame = points.frame

    assert len(frame) == 943 + 1682
    assert set(frame.loc[frame["kind"] == "movie", "main_genre"]) == {"(no genre)"}
    assert frame.loc[frame["kind"] == "user", "main_genre"].isna().all()
    assert not [c for c in frame.columns if c.startswith("share ")]


def test_build_points_vectors_match_rows(ml100k_run):
    points = build_points(ml100k_run, "translated", sample_size=200, seed=2)
    frame = points.frame
    _, items = user_item_vectors(ml100k_run.model)

    movies = np.flatnonzero(frame["kind"] == "movie")
    np.testing.assert_array_equal(
        points.vectors[movies], items[frame["item_index"][movies]]
    )
    pairs = np.flatnonzero(frame["kind"] == "p + r")
    expected = pair_vectors(
        ml100k_run.model, frame["user_index"][pairs], frame["item_index"][pairs]
    )
    np.testing.assert_allclose(points.vectors[pairs], expected.translated, atol=1e-6)
    assert frame["slot"][pairs].tolist() == expected.dominant_slot.tolist()


def test_build_points_pairs_keep_ratings(ml100k_run):
    split = ml100k_run.split
    points = build_points(ml100k_run, "relations", sample_size=500, seed=0)

    positions = sample_training_pairs(split, 500, seed=0)
    np.testing.assert_array_equal(
        points.frame["user_index"], split.train_users[positions]
    )
    np.testing.assert_array_equal(
        points.frame["rating"], split.train_ratings[positions]
    )
    assert set(points.frame["rating"]) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_build_points_samples_users_and_items(ml100k_run):
    points = build_points(ml100k_run, "users_items", sample_size=500, seed=0)

    assert len(points.frame) == 500
    assert set(points.frame["kind"]) == {"user", "movie"}


def test_build_points_attributes(ml100k_run):
    frame = build_points(ml100k_run, "users_items", sample_size=5000, seed=0).frame
    star_wars = frame[(frame["kind"] == "movie") & (frame["item_id"] == 50)].iloc[0]
    user = frame[(frame["kind"] == "user") & (frame["user_id"] == 1)].iloc[0]
    split = ml100k_run.split

    assert star_wars["label"] == "Star Wars (1977)"
    assert star_wars["share Sci-Fi"] == 1.0
    assert star_wars["popularity"] == np.sum(
        split.train_items == ml100k_run.item_index(50)
    )
    assert user["activity"] == np.sum(split.train_users == ml100k_run.user_index(1))
    assert (user["age"], user["gender"], user["occupation"]) == (24, "M", "technician")
    assert np.isnan(star_wars["activity"])

    rated = split.train_items[split.train_users == ml100k_run.user_index(1)]
    genres = ml100k_run.items["genres"].to_numpy()[rated]
    drama = np.mean(["Drama" in value.split("|") for value in genres])
    assert user["share Drama"] == pytest.approx(drama)


def test_build_points_rejects_unknown_kind(ml100k_run):
    with pytest.raises(
        ValueError, match="kind must be one of users_items, .*; got 'pairs'"
    ):
        build_points(ml100k_run, "pairs", 100, 0)


def test_build_points_rejects_zero_sample(ml100k_run):
    with pytest.raises(ValueError, match="sample_size must be an integer from 1 to"):
        build_points(ml100k_run, "users", 0, 0)


def test_kinds_have_labels():
    assert set(KINDS) == {"users_items", "users", "items", "relations", "translated"}
