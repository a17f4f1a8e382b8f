"""AppTest tests of the Train page's dataset and filter controls.

The data folder is a temporary one that links MovieLens-100K from ``data/`` and
contains one uploaded file, so `lrml.data.local_datasets` lists both. No training
slot is free, so a submitted run stays queued and no process starts.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import lrml.data
from lrml import jobs
from lrml.config import TrainConfig
from lrml.data import DATASETS, dataset_label, resolve_data_dir, save_upload
from lrml.fetch import locate_release
from lrml.prepare import prepare_interactions
from lrml.runs import create_run, list_runs

APP = Path(__file__).resolve().parent.parent / "app.py"
TRAIN_PAGE = "pages/train.py"
TIMEOUT_S = 60
SCHEDULER = importlib.import_module(jobs.max_concurrent_runs.__module__)
UPLOAD_NAME = "My Ratings.csv"


def make_upload_table() -> pd.DataFrame:
    """Return 12 users by 10 items with seeded ratings from 1 to 5."""
    rng = np.random.default_rng(11)
    users, items = np.meshgrid(np.arange(1, 13), np.arange(1, 11), indexing="ij")
    return pd.DataFrame(
        {
            "user": users.ravel(),
            "item": items.ravel(),
            "rating": rng.integers(1, 6, size=users.size),
        }
    )


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """A data folder with MovieLens-100K linked in and nothing else."""
    found = locate_release("ml-100k", resolve_data_dir())
    assert found is not None, "MovieLens-100K must be in data/ for these tests"
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / found.folder.name).symlink_to(found.folder, target_is_directory=True)
    monkeypatch.setattr(lrml.data, "DEFAULT_DATA_DIR", folder)
    return folder


@pytest.fixture
def upload(data_dir) -> str:
    content = make_upload_table().to_csv(index=False).encode()
    return str(save_upload(UPLOAD_NAME, content, data_dir).resolve())


@pytest.fixture(autouse=True)
def queue_only(monkeypatch):
    """Keep app.py from queueing a default run and submitted runs from starting."""
    monkeypatch.setattr(jobs, "ensure_default_run", lambda root=None: None)
    for module in {jobs, SCHEDULER}:
        monkeypatch.setattr(module, "max_concurrent_runs", lambda: 0)


def open_train_page(**state) -> AppTest:
    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    for key, value in state.items():
        app.session_state[key] = value
    app.run()
    app.switch_page(TRAIN_PAGE).run()
    assert not app.exception, app.exception
    return app


def metric_values(app: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in app.metric}


def test_dataset_choices_list_releases_and_uploads(upload):
    app = open_train_page()

    widget = app.selectbox(key="train_config_dataset")
    assert widget.options[: len(DATASETS)] == [
        name if name == "ml-100k" else f"{name} (downloaded when a run starts)"
        for name in DATASETS
    ]
    assert widget.options[len(DATASETS) :] == [
        f"{Path(upload).name} ({Path(upload).parent})"
    ]
    assert widget.value == "ml-100k"
    assert app.radio(key="train_feedback").value == "Every rating counts"
    assert app.number_input(key="train_config_k_core").value == 1


def test_defaults_come_from_data_page(upload):
    app = open_train_page(
        data_selected_dataset=upload,
        data_selected_min_rating=3.0,
        data_selected_k_core=2,
    )

    assert app.selectbox(key="train_config_dataset").value == upload
    assert app.radio(key="train_feedback").value == "Ratings at or above a threshold"
    assert app.number_input(key="train_config_min_rating").value == 3.0
    assert app.number_input(key="train_config_k_core").value == 2
    expected = prepare_interactions(
        make_upload_table().rename(columns={"user": "user_id", "item": "item_id"}),
        min_rating=3.0,
        k_core=2,
    )
    metrics = metric_values(app)
    assert metrics["Users kept"] == f"{expected['user_id'].nunique():,}"
    assert metrics["Items kept"] == f"{expected['item_id'].nunique():,}"
    assert metrics["Interactions kept"] == f"{len(expected):,}"
    placeholder = app.text_input(key="train_run_name").placeholder
    assert placeholder.startswith(f"{dataset_label(upload)}-d")
    assert dataset_label(upload).startswith("My_Ratings-")


def test_filtered_counts_follow_controls(data_dir, ml100k):
    app = open_train_page()

    app.radio(key="train_feedback").set_value("Ratings at or above a threshold")
    app.run()
    app.number_input(key="train_config_min_rating").set_value(4.0)
    app.number_input(key="train_config_k_core").set_value(5).run()

    kept = prepare_interactions(ml100k.interactions, min_rating=4.0, k_core=5)
    metrics = metric_values(app)
    assert metrics["Users kept"] == f"{kept['user_id'].nunique():,}"
    assert metrics["Items kept"] == f"{kept['item_id'].nunique():,}"
    assert metrics["Interactions kept"] == f"{len(kept):,}"


def test_form_queues_run_with_filter(upload):
    app = open_train_page(
        data_selected_dataset=upload,
        data_selected_min_rating=3.0,
        data_selected_k_core=2,
    )

    app.button(key="train_submit").click().run()

    assert not app.exception, app.exception
    [run] = list_runs()
    assert run.name.startswith(f"{dataset_label(upload)}-d")
    assert run.config.dataset == upload
    assert run.config.min_rating == 3.0
    assert run.config.k_core == 2
    assert run.status()["state"] == "queued"


def test_form_rejects_filter_leaving_nothing(data_dir):
    app = open_train_page()

    app.number_input(key="train_config_k_core").set_value(5000).run()
    assert any("No interactions are left" in error.value for error in app.error)

    app.button(key="train_submit").click().run()

    errors = [error.value for error in app.error]
    assert any("Nothing was created" in text for text in errors)
    assert list_runs() == []


def test_copy_settings_sets_filter_controls(data_dir):
    create_run(TrainConfig(epochs=1, min_rating=4, k_core=5), name="filtered")
    app = open_train_page()

    app.button(key="train_copy_settings").click().run()

    assert not app.exception, app.exception
    assert app.selectbox(key="train_config_dataset").value == "ml-100k"
    assert app.radio(key="train_feedback").value == "Ratings at or above a threshold"
    assert app.number_input(key="train_config_min_rating").value == 4.0
    assert app.number_input(key="train_config_k_core").value == 5


def test_run_settings_and_table_show_filter_fields(data_dir):
    create_run(TrainConfig(epochs=1, min_rating=4, k_core=5), name="filtered")
    create_run(TrainConfig(epochs=1), name="unfiltered")
    app = open_train_page(run="filtered")

    tables = {tuple(frame.value.columns): frame.value for frame in app.dataframe}
    settings = tables[("field", "value")].set_index("field")["value"]
    assert settings["min_rating"] == "4"
    assert settings["k_core"] == "5"
    [runs] = [frame for columns, frame in tables.items() if "name" in columns]
    by_name = runs.set_index("name")
    assert by_name.loc["filtered", "min_rating"] == 4
    assert by_name.loc["filtered", "k_core"] == 5
    assert pd.isna(by_name.loc["unfiltered", "min_rating"])
    assert pd.isna(by_name.loc["unfiltered", "k_core"])


def test_home_shows_filtered_run_statistics(data_dir, ml100k):
    create_run(TrainConfig(epochs=1, min_rating=4, k_core=5), name="filtered")
    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    app.session_state["run"] = "filtered"
    app.run()

    assert not app.exception, app.exception
    kept = prepare_interactions(ml100k.interactions, min_rating=4, k_core=5)
    assert metric_values(app)["Ratings"] == f"{len(kept):,}"
    captions = " ".join(caption.value for caption in app.caption)
    assert "keeps ratings >= 4, 5-core" in captions
    assert f"{len(kept):,} of 100,000 ratings" in captions
