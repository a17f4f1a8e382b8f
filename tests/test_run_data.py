"""Tests for lrml.run_data, and for filtered runs through the runner and the CLI.

The real runs train one epoch of a small model on MovieLens-100K with
min_rating=4 and k_core=5, then load again through `lrml.inference` and the
evaluate, recommend and attention commands.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from lrml.cli import main
from lrml.config import TrainConfig
from lrml.data import Dataset
from lrml.dataset import DataError
from lrml.evaluation import ModelScorer, evaluate
from lrml.inference import load_run, recommend
from lrml.prepare import prepare_interactions
from lrml.run_data import filter_description, run_dataset
from lrml.runner import train_run
from lrml.runs import (
    CONFIG_FILE,
    TEST_METRICS_FILE,
    WEIGHTS_FILE,
    Run,
    create_run,
    write_json_atomic,
)

FILTERED_CONFIG = TrainConfig(
    epochs=1,
    embedding_dim=8,
    memory_size=4,
    batch_size=4096,
    num_negatives=3,
    min_rating=4,
    k_core=5,
)
SMALL_ARGS = [
    "--epochs",
    "1",
    "--embedding-dim",
    "8",
    "--memory-size",
    "4",
    "--batch-size",
    "4096",
    "--set",
    "num_negatives=3",
]


def _dataset(interactions: pd.DataFrame) -> Dataset:
    items = pd.DataFrame({"item_id": sorted(interactions["item_id"].unique())})
    return Dataset("synthetic", interactions, items, pd.DataFrame(), "test fixture")


def _expected_sizes(ml100k) -> tuple[int, int]:
    kept = prepare_interactions(ml100k.interactions, min_rating=4, k_core=5)
    return kept["user_id"].nunique(), kept["item_id"].nunique()


def _vocab_sizes(run: Run) -> tuple[int, int]:
    users, items = run.vocabularies()
    return len(users), len(items)


# run_dataset on synthetic data ---------------------------------------------------


def test_run_dataset_without_filter_is_unchanged(interactions):
    dataset = _dataset(interactions)

    assert run_dataset(TrainConfig(), dataset) is dataset
    assert run_dataset(TrainConfig(k_core=1), dataset) is dataset


def test_run_dataset_matches_prepare(interactions):
    dataset = _dataset(interactions)
    config = TrainConfig(min_rating=2, k_core=3)

    filtered = run_dataset(config, dataset)

    expected = prepare_interactions(interactions, 2, 3).reset_index(drop=True)
    pd.testing.assert_frame_equal(filtered.interactions, expected)
    assert filtered.items is dataset.items
    assert filtered.name == dataset.name


def test_run_dataset_rejects_empty_result(interactions):
    config = TrainConfig(k_core=1000)

    with pytest.raises(DataError, match="No interactions are left after keeping"):
        run_dataset(config, _dataset(interactions))


def test_run_dataset_rejects_single_user(interactions):
    # Only the first user keeps any rating at or above the threshold.
    single = interactions.assign(rating=1.0)
    first_user = single["user_id"] == single["user_id"].iloc[0]
    single.loc[first_user, "rating"] = 5.0

    with pytest.raises(DataError, match=r"leaves 1 user\(s\).*Lower min_rating"):
        run_dataset(TrainConfig(min_rating=5), _dataset(single))


def test_filter_description_names_each_step():
    assert filter_description(TrainConfig()) == "every rating"
    assert filter_description(TrainConfig(min_rating=4)) == "ratings >= 4"
    assert filter_description(TrainConfig(k_core=5)) == "5-core"
    both = TrainConfig(min_rating=3.5, k_core=10)
    assert filter_description(both) == "ratings >= 3.5, 10-core"


# A real filtered run through the runner -------------------------------------------


@pytest.fixture(scope="module")
def filtered_run_folder(tmp_path_factory):
    """Train FILTERED_CONFIG for one epoch through the runner, once per module."""
    root = tmp_path_factory.mktemp("filtered-runs")
    run = create_run(FILTERED_CONFIG, name="filtered", root=root)
    train_run(run)
    return run.path


@pytest.fixture
def filtered_run(filtered_run_folder, models_dir) -> Run:
    models_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(filtered_run_folder, models_dir / "filtered")
    return Run(models_dir / "filtered")


@pytest.mark.slow
def test_runner_saves_filtered_vocabularies(filtered_run, ml100k):
    assert filtered_run.status()["state"] == "finished"
    assert _vocab_sizes(filtered_run) == _expected_sizes(ml100k)


@pytest.mark.slow
def test_filtered_run_reloads_for_inference(filtered_run, ml100k):
    loaded = load_run(filtered_run.name, dataset=ml100k)

    n_users, n_items = _expected_sizes(ml100k)
    assert (loaded.model.n_users, loaded.model.n_items) == (n_users, n_items)
    assert loaded.split.n_users == n_users
    assert loaded.split.n_items == n_items
    assert (loaded.dataset.interactions["rating"] >= 4).all()

    top = recommend(loaded, loaded.user_index(1), k=5)
    assert len(top) == 5

    summary = evaluate(ModelScorer(loaded.model), loaded.split, "test").summary
    assert summary["users"] == n_users
    saved = json.loads((filtered_run.path / TEST_METRICS_FILE).read_text())
    assert summary["sampled_hr@10"] == pytest.approx(saved["sampled_hr@10"])


@pytest.mark.slow
def test_movies_rated_below_threshold_are_not_recommended(filtered_run, ml100k):
    loaded = load_run(filtered_run.name, dataset=ml100k)
    ratings = ml100k.interactions
    low = ratings[(ratings["user_id"] == 1) & (ratings["rating"] < 4)]
    low_ids = set(low["item_id"]) & set(loaded.split.item_vocab.ids)
    assert low_ids, "user 1 rated no kept movie below 4"

    top = recommend(loaded, loaded.user_index(1), k=100)

    assert not low_ids & set(top["item_id"])
    shown = recommend(loaded, loaded.user_index(1), k=100, exclude_seen=False)
    assert shown.loc[shown["item_id"].isin(low_ids), "seen"].all()


@pytest.mark.slow
def test_runner_filter_error_keeps_saved_results(filtered_run):
    # The same run, as if its filter had been changed to one that leaves nothing.
    config = filtered_run.config.replace(k_core=10_000, epochs=2)
    write_json_atomic(filtered_run.path / CONFIG_FILE, config.to_dict())

    with pytest.raises(DataError, match="No interactions are left"):
        train_run(filtered_run)

    status = filtered_run.status()
    assert status["state"] == "failed"
    assert "Lower min_rating or k_core" in status["message"]
    assert (filtered_run.path / WEIGHTS_FILE).exists()
    assert (filtered_run.path / TEST_METRICS_FILE).exists()
    assert filtered_run.checkpoint_epoch() == 1


# A real filtered run through the command line --------------------------------------


@pytest.mark.slow
def test_cli_trains_and_reloads_filtered_run(models_dir, ml100k, capsys):
    code = main(
        ["train", *SMALL_ARGS, "--min-rating", "4", "--k-core", "5"]
        + ["--name", "cli-filtered", "--json"]
    )
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    run = Run(models_dir / "cli-filtered")
    assert summary["run"] == str(run.path)
    assert run.config.min_rating == 4
    assert run.config.k_core == 5
    assert _vocab_sizes(run) == _expected_sizes(ml100k)

    assert main(["evaluate", "cli-filtered", "--json"]) == 0
    evaluation = json.loads(capsys.readouterr().out)
    assert evaluation["users"] == _expected_sizes(ml100k)[0]
    assert evaluation["sampled_hr@10"] == pytest.approx(
        summary["test"]["sampled_hr@10"]
    )

    assert main(["recommend", "cli-filtered", "--user", "1", "-k", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["rank"] for row in rows] == [1, 2, 3]

    assert main(["attention", "cli-filtered", "--user", "1", "--item", "50"]) == 0
    assert "slot" in capsys.readouterr().out

    kept = prepare_interactions(ml100k.interactions, min_rating=4, k_core=5)
    dropped = sorted(set(ml100k.interactions["user_id"]) - set(kept["user_id"]))
    assert main(["recommend", "cli-filtered", "--user", str(dropped[0])]) == 2
    error = capsys.readouterr().err
    assert f"unknown user id '{dropped[0]}'" in error
    assert "ml-100k (ratings >= 4, 5-core)" in error


def test_cli_rejects_filter_leaving_nothing(models_dir, capsys):
    code = main(["train", *SMALL_ARGS, "--k-core", "10000", "--name", "too-strict"])

    assert code == 2
    assert "No interactions are left" in capsys.readouterr().err
    assert not (models_dir / "too-strict").exists()


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("min_rating=3.5", 3.5), ("k_core=none", None), ("min_rating=None", None)],
)
def test_cli_set_parses_filter_fields(setting, expected):
    from lrml.cli import _parse_settings

    [(name, value)] = _parse_settings([setting]).items()

    assert name == setting.split("=")[0]
    assert value == expected


def test_cli_rejects_fractional_k_core(capsys):
    assert main(["train", "--set", "k_core=2.5"]) == 2
    assert "k_core takes an integer or none" in capsys.readouterr().err
