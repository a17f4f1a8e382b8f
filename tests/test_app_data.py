"""AppTest tests of the Data page: statistics, filtering, uploads and bad input.

The data folder is a temporary one with fixture files, the models folder is
empty, and `jobs.start_training` is replaced so that the app's default run
never starts a process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import lrml.data
from lrml import jobs
from lrml.fetch import GROUPLENS_URL_ENV
from tests.conftest import make_interactions
from tests.data_fixtures import write_release

pytestmark = pytest.mark.slow

APP = Path(__file__).resolve().parent.parent / "app.py"
PAGE = "pages/data.py"
TIMEOUT_S = 60


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "data"
    # The Home page, which AppTest runs first, loads MovieLens 100K.
    write_release("ml-100k", folder)
    monkeypatch.setattr(lrml.data, "DEFAULT_DATA_DIR", folder)
    monkeypatch.setattr(jobs, "start_training", lambda run: 0)
    # Refuses connections at once, so a download fails fast.
    monkeypatch.setenv(GROUPLENS_URL_ENV, "http://127.0.0.1:9/")
    return folder


@pytest.fixture
def ratings_csv(tmp_path) -> Path:
    """40 users and 60 items, with every fifth user having only one or two ratings."""
    frame = make_interactions()
    path = tmp_path / "ratings.csv"
    frame.to_csv(path, index=False)
    return path


def open_data_page() -> AppTest:
    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    app.run()
    app.switch_page(PAGE).run()
    assert not app.exception, app.exception
    return app


def metric_values(app: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in app.metric}


def error_texts(app: AppTest) -> list[str]:
    return [element.value for element in app.error]


def test_release_statistics(data_dir):
    write_release("ml-1m", data_dir)
    app = open_data_page()

    app.selectbox(key="data_release").set_value("ml-1m").run()

    assert not app.exception, app.exception
    assert error_texts(app) == []
    assert metric_values(app) == {
        "Users": "2",
        "Items": "3",
        "Interactions": "5",
        "Density": "83.333%",
    }
    assert app.session_state["data_selected_dataset"] == "ml-1m"


def test_filtering_changes_counts(ratings_csv):
    app = open_data_page()
    app.radio(key="data_source").set_value("File or folder on this machine").run()
    app.text_input(key="data_path").input(str(ratings_csv)).run()
    frame = make_interactions()
    before = metric_values(app)

    assert before["Users"] == str(frame["user_id"].nunique())
    assert before["Interactions"] == f"{len(frame):,}"

    app.radio(key="data_feedback").set_value("Ratings at or above a threshold").run()
    app.number_input(key="data_min_rating").set_value(4.0).run()
    kept = int((frame["rating"] >= 4.0).sum())

    assert metric_values(app)["Interactions"] == f"{kept:,}"

    app.radio(key="data_feedback").set_value("Every rating counts").run()
    app.number_input(key="data_k_core").set_value(3).run()
    after = metric_values(app)

    assert not app.exception, app.exception
    assert int(after["Users"]) < int(before["Users"])
    assert next(m.delta for m in app.metric if m.label == "Users").startswith("-")


def test_upload_small_csv(data_dir):
    app = open_data_page()
    app.radio(key="data_source").set_value("Upload").run()
    content = b"user,item,rating\n1,10,5\n1,11,4\n2,10,3\n3,12,1\n"

    app.file_uploader(key="data_upload").set_value(
        ("my ratings.csv", content, "text/csv")
    ).run()

    assert not app.exception, app.exception
    assert error_texts(app) == []
    saved = sorted((data_dir / "uploads").iterdir())
    assert len(saved) == 1
    assert saved[0].name.startswith("my_ratings-")
    assert saved[0].read_bytes() == content
    assert metric_values(app)["Users"] == "3"
    assert app.success[0].value == f"Saved as `{saved[0]}`."


def test_bad_upload_shows_message(data_dir):
    app = open_data_page()
    app.radio(key="data_source").set_value("Upload").run()

    app.file_uploader(key="data_upload").set_value(
        ("bad.csv", b"user_id,item_id\n1,10\n2,x\n", "text/csv")
    ).run()

    assert not app.exception, app.exception
    assert error_texts(app) == [
        (
            "bad.csv, line 3: item_id must be an integer, found 'x'. Correct or "
            "remove that line."
        )
    ]
    assert app.metric == []
    assert not (data_dir / "uploads").exists() or not any(
        path for path in (data_dir / "uploads").iterdir()
    )


def test_missing_release_download_offline(data_dir):
    app = open_data_page()
    app.selectbox(key="data_release").set_value("ml-20m").run()

    assert "ml-20m** is not in" in app.info[0].value
    app.button(key="data_download").click().run()

    assert not app.exception, app.exception
    [message] = error_texts(app)
    assert message.startswith("Failed to download ml-20m.zip from http://127.0.0.1:9/")
    assert "To place the files by hand" in message
    assert not (data_dir / "ml-20m").exists()
    assert not (data_dir / "ml-20m.zip").exists()
    assert [path.name for path in data_dir.iterdir() if path.name[0] == "."] == []


def test_unknown_path_shows_message(tmp_path):
    app = open_data_page()
    app.radio(key="data_source").set_value("File or folder on this machine").run()

    app.text_input(key="data_path").input(str(tmp_path / "nope.csv")).run()

    [message] = error_texts(app)
    assert message.startswith(f"Unknown dataset '{tmp_path / 'nope.csv'}'")
