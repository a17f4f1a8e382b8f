"""AppTest tests of the Streamlit app against a tiny run trained on MovieLens-100K.

The run trains once per module (one epoch, a few seconds on two cores).
Every test points $LRML_MODELS_DIR at its folder, so ``app.py`` finds a run and
does not start the default training process, and `jobs.start_training` is
replaced so that no test can spawn one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lrml import jobs, projection
from lrml.config import TrainConfig
from lrml.runs import MODELS_DIR_ENV, create_run, open_run

pytestmark = pytest.mark.slow

APP = Path(__file__).resolve().parent.parent / "app.py"
TIMEOUT_S = 60
TINY_RUN = "tiny"
PAGES = [
    "pages/home.py",
    "pages/train.py",
    "pages/recommend.py",
    "pages/attention.py",
    "pages/embeddings.py",
]


@pytest.fixture(scope="module")
def tiny_models_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("app-models")
    config = TrainConfig(epochs=1, embedding_dim=8, memory_size=4)
    jobs.train_in_foreground(create_run(config, name=TINY_RUN, root=folder))
    return folder


@pytest.fixture(autouse=True)
def models_dir(tiny_models_dir, monkeypatch) -> Path:
    """Replace conftest's empty models folder, in which app.py would start training."""
    monkeypatch.setenv(MODELS_DIR_ENV, str(tiny_models_dir))
    return tiny_models_dir


@pytest.fixture(autouse=True)
def started_runs(monkeypatch) -> list[str]:
    """Record the runs that the app requests to start, instead of spawning processes."""
    started: list[str] = []

    def record(run) -> int:
        started.append(run.name)
        return 0

    monkeypatch.setattr(jobs, "start_training", record)
    return started


@pytest.fixture(autouse=True)
def umap_as_pca(monkeypatch) -> None:
    """Project with PCA when the Embeddings page requests UMAP.

    UMAP compiles numba code on first use, which took 30 to 60 seconds on a
    two-core machine.
    """
    pca = projection.project

    def project(vectors, method="umap", **settings):
        return pca(vectors, method="pca")

    monkeypatch.setattr(projection, "project", project)


def open_app(page: str | None = None, **query: str) -> AppTest:
    """Run app.py with the given query parameters, then switch to ``page``."""
    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    for key, value in query.items():
        app.query_params[key] = value
    app.run()
    if page is not None:
        app.switch_page(page).run()
    return app


def error_texts(app: AppTest) -> list[str]:
    return [element.value for element in app.error]


def find_table(app: AppTest, column: str):
    """Return the first st.dataframe with ``column``.

    Display-only dataframes get no element id in AppTest, so a key cannot find them.
    """
    for table in app.dataframe:
        if column in table.value.columns:
            return table.value
    raise AssertionError(f"no dataframe with a {column!r} column on the page")


@pytest.mark.parametrize("page", PAGES)
def test_page_runs_without_error(page):
    app = open_app(page)

    assert not app.exception, app.exception
    assert error_texts(app) == []
    assert app.query_params["run"] == TINY_RUN


def test_app_does_not_start_default_run(started_runs):
    open_app()

    assert started_runs == []


def test_recommend_user_shows_ten_rows():
    app = open_app("pages/recommend.py")
    app.number_input(key="recommend_user").set_value(42).run()

    top = find_table(app, "score")
    assert not app.exception, app.exception
    assert len(top) == 10
    assert list(top["rank"]) == list(range(1, 11))
    assert app.query_params["user"] == "42"


def test_recommend_k_and_seen_toggle():
    app = open_app("pages/recommend.py", user="7")
    app.slider(key="recommend_k").set_value(25)
    app.toggle(key="recommend_include_seen").set_value(True).run()

    top = find_table(app, "score")
    assert len(top) == 25
    assert "seen" in top.columns


def test_attention_weights_sum_to_one():
    app = open_app("pages/attention.py", user="42", item="50")

    slots = find_table(app, "weight")
    assert not app.exception, app.exception
    assert len(slots) == 4
    assert slots["weight"].sum() == pytest.approx(1.0, abs=1e-5)
    assert (slots["weight"] >= 0).all()
    assert app.selectbox(key="attention_item").value == 50


def test_query_params_survive_page_switches():
    app = open_app("pages/recommend.py", run=TINY_RUN, user="42")
    assert app.number_input(key="recommend_user").value == 42

    app.switch_page("pages/attention.py").run()
    assert app.number_input(key="attention_user").value == 42
    assert app.query_params["run"] == TINY_RUN
    assert app.query_params["user"] == "42"

    app.switch_page("pages/home.py").run()
    assert app.query_params["user"] == "42"


def test_unknown_user_shows_error():
    app = open_app("pages/recommend.py", user="99999")

    assert not app.exception, app.exception
    assert any("unknown user 99999" in text for text in error_texts(app))
    assert len(app.dataframe) == 0


def test_non_integer_user_shows_error():
    app = open_app("pages/recommend.py", user="abc")

    assert any("Invalid user id 'abc'" in text for text in error_texts(app))
    assert len(find_table(app, "score")) == 10


def test_unknown_movie_shows_error():
    app = open_app("pages/attention.py", user="42", item="999999")

    assert not app.exception, app.exception
    assert any("Unknown movie id '999999'" in text for text in error_texts(app))


def test_unknown_run_shows_error():
    app = open_app(run="no-such-run")

    assert any("No run named 'no-such-run'" in text for text in error_texts(app))
    assert app.query_params["run"] == TINY_RUN


def test_train_form_rejects_invalid_run_name(tiny_models_dir, started_runs):
    app = open_app("pages/train.py")
    app.text_input(key="train_run_name").input("../escape")
    app.button(key="train_submit").click().run()

    errors = error_texts(app)
    assert len(errors) == 1
    assert "invalid run name '../escape'" in errors[0]
    assert started_runs == []
    assert sorted(path.name for path in tiny_models_dir.iterdir()) == [TINY_RUN]


def test_train_form_starts_valid_run(tiny_models_dir, started_runs):
    app = open_app("pages/train.py")
    app.text_input(key="train_run_name").input("from-form")
    app.number_input(key="train_config_embedding_dim").set_value(16)
    app.number_input(key="train_config_epochs").set_value(2)
    app.button(key="train_submit").click().run()

    try:
        assert not app.exception, app.exception
        assert error_texts(app) == []
        assert started_runs == ["from-form"]
        config = open_run("from-form").config
        assert config.embedding_dim == 16
        assert config.epochs == 2
        assert app.query_params["run"] == "from-form"
    finally:
        shutil.rmtree(tiny_models_dir / "from-form", ignore_errors=True)


def test_run_without_weights_shows_progress(tiny_models_dir):
    run = create_run(TrainConfig(epochs=3), name="training", root=tiny_models_dir)
    # This process is alive, so the status reads as a live training process.
    run.set_status("running", pid=os.getpid(), epoch=0, message="loading data")

    try:
        app = open_app("pages/recommend.py", run="training")
        assert not app.exception, app.exception
        assert any("is running: 0 of 3 epochs done" in info.value for info in app.info)
        assert len(app.dataframe) == 0
    finally:
        shutil.rmtree(run.path, ignore_errors=True)
