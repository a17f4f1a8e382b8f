"""AppTest tests of the Embeddings page against a tiny run trained on MovieLens-100K.

The run trains once per module (one epoch, d = 8, four memory slots). Most
tests pick PCA before the first script run, so that no UMAP job starts; one
test runs a real UMAP on a small sample. AppTest 1.67 has no element for
plotly charts, so the figure is read from the chart's JSON spec.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file
from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest

from lrml import jobs
from lrml.config import TrainConfig
from lrml.runs import MODELS_DIR_ENV, WEIGHTS_FILE, create_run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
PAGE = "pages/embeddings.py"
TIMEOUT_S = 120
TINY_RUN = "tiny"
BROKEN_RUN = "broken"
N_USERS, N_ITEMS = 943, 1682
COLOURS = [
    "kind",
    "main genre",
    "genre share",
    "year",
    "popularity",
    "user activity",
    "age",
    "gender",
    "occupation",
    "dominant slot",
    "rating",
]


@pytest.fixture(scope="module")
def tiny_models_dir(tmp_path_factory) -> Path:
    """A trained tiny run, and a copy whose weights hold NaN and infinite values."""
    folder = tmp_path_factory.mktemp("embeddings-models")
    config = TrainConfig(epochs=1, embedding_dim=8, memory_size=4)
    jobs.train_in_foreground(create_run(config, name=TINY_RUN, root=folder))

    broken = folder / BROKEN_RUN
    shutil.copytree(folder / TINY_RUN, broken)
    tensors = load_file(str(broken / WEIGHTS_FILE))
    tensors["user_embeddings"][[0, 5], 1] = float("nan")  # users 1 and 6
    tensors["item_embeddings"][49, 2] = float("inf")  # movie 50, Star Wars
    save_file(tensors, str(broken / WEIGHTS_FILE), metadata={"epoch": "1"})
    return folder


@pytest.fixture(autouse=True)
def models_dir(tiny_models_dir, monkeypatch) -> Path:
    """Replace conftest's empty models folder, in which app.py would start training."""
    monkeypatch.setenv(MODELS_DIR_ENV, str(tiny_models_dir))
    return tiny_models_dir


@pytest.fixture(autouse=True)
def no_training(monkeypatch) -> None:
    monkeypatch.setattr(jobs, "start_training", lambda run: 0)


def open_embeddings(run: str = TINY_RUN, query: dict | None = None, **state) -> AppTest:
    """Open the Embeddings page with widget values preset through session state."""
    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    app.query_params["run"] = run
    for key, value in (query or {}).items():
        app.query_params[key] = value
    state.setdefault("method", "pca")
    for key, value in state.items():
        app.session_state[f"embeddings_{key.removeprefix('embeddings_')}"] = value
    app.run()
    app.switch_page(PAGE).run()
    assert not app.exception, app.exception
    return app


def chart_spec(app: AppTest) -> dict:
    charts = app.get("plotly_chart")
    assert len(charts) == 1
    return json.loads(charts[0].proto.spec)


def decode(value) -> np.ndarray:
    """Decode plotly's base64 typed arrays, or pass a plain list through."""
    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        if "shape" in value:
            array = array.reshape([int(n) for n in str(value["shape"]).split(",")])
        return array
    return np.asarray(value)


def point_traces(spec: dict) -> list[dict]:
    """Return the traces that draw projected points; they carry row numbers."""
    return [trace for trace in spec["data"] if "customdata" in trace]


def drawn_rows(spec: dict) -> np.ndarray:
    return np.concatenate([decode(trace["customdata"]) for trace in point_traces(spec)])


def trace_named(spec: dict, prefix: str) -> dict:
    matches = [t for t in spec["data"] if t.get("name", "").startswith(prefix)]
    assert len(matches) == 1, [t.get("name") for t in spec["data"]]
    return matches[0]


def markdown_text(app: AppTest) -> str:
    return "\n".join(element.value for element in app.markdown)


def table_with(app: AppTest, column: str):
    for table in app.dataframe:
        if column in table.value.columns:
            return table.value
    raise AssertionError(f"no dataframe with a {column!r} column on the page")


# Kinds, colours, dimensions ---------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "sample_size", "expected"),
    [
        ("users_items", 5000, N_USERS + N_ITEMS),
        ("users", 250, 250),
        ("items", 5000, N_ITEMS),
        ("relations", 1000, 1000),
        ("translated", 1000, N_ITEMS + 1000),
    ],
)
def test_each_kind_draws_every_point(kind, sample_size, expected):
    app = open_embeddings(kind=kind, sample_size=sample_size)

    spec = chart_spec(app)
    rows = drawn_rows(spec)
    assert [e.value for e in app.error] == []
    assert sorted(rows.tolist()) == list(range(expected))
    assert {trace["type"] for trace in point_traces(spec)} == {"scattergl"}
    assert f"**PCA** of **{expected:,}** points" in markdown_text(app)
    assert spec["layout"]["title"]["text"].startswith("PCA of ")


def test_each_colouring_draws_every_point():
    app = open_embeddings(kind="relations", sample_size=500, translation=False)

    for colour in COLOURS:
        app.selectbox(key="embeddings_colour").set_value(colour).run()
        assert not app.exception, (colour, app.exception)

        spec = chart_spec(app)
        names = [trace["name"] for trace in point_traces(spec)]
        assert sorted(drawn_rows(spec).tolist()) == list(range(500)), colour
        if colour == "kind":
            assert names == ["relation (500)"]
        elif colour == "dominant slot":
            assert all(name.startswith("slot ") for name in names), names
        elif colour in ("main genre", "gender", "occupation"):
            assert len(names) > 1, (colour, names)
        else:
            colorbar = point_traces(spec)[0]["marker"]["colorbar"]["title"]["text"]
            assert colorbar, colour


def test_colouring_without_values_is_grey():
    app = open_embeddings(kind="users", colour="dominant slot", translation=False)

    names = [trace["name"] for trace in point_traces(chart_spec(app))]
    assert names == [f"no dominant slot ({N_USERS})"]


def test_genre_share_of_chosen_genre():
    app = open_embeddings(kind="items", colour="genre share", translation=False)
    app.selectbox(key="embeddings_genre").set_value("Film-Noir").run()

    trace = point_traces(chart_spec(app))[0]
    values = decode(trace["marker"]["color"])
    assert trace["marker"]["colorbar"]["title"]["text"] == "share of Film-Noir"
    assert set(np.unique(values)) == {0.0, 1.0}
    assert values.sum() == 24  # Film-Noir movies in MovieLens-100K


def test_size_by_popularity_varies_sizes():
    app = open_embeddings(kind="items", size=True, translation=False)

    sizes = decode(point_traces(chart_spec(app))[0]["marker"]["size"])
    assert sizes.min() < sizes.max()


def test_three_dimensions_use_scatter3d():
    app = open_embeddings(kind="users_items", dimensions=3)

    spec = chart_spec(app)
    assert {trace["type"] for trace in spec["data"]} == {"scatter3d"}
    assert len(drawn_rows(spec)) == 2500
    assert "n_components: `3`" in markdown_text(app)
    assert {t["marker"]["symbol"] for t in point_traces(spec)} == {"square"}
    assert chart_config(app)["plotGlPixelRatio"] == 1
    captions = " ".join(element.value for element in app.caption)
    assert "The gold diamond is the user's vector p" in captions


def chart_config(app: AppTest) -> dict:
    return json.loads(app.get("plotly_chart")[0].proto.config)


@pytest.mark.parametrize(
    ("kind", "described", "drawn_2d"),
    [
        ("relations", "2,500 sampled points", 20_000),
        ("users_items", "2,500 sampled points", N_USERS + N_ITEMS),
        ("translated", "818 sampled pairs and all 1,682 movies", 21_682),
    ],
)
def test_3d_point_limit(kind, described, drawn_2d):
    app = open_embeddings(kind=kind, sample_size=20_000, dimensions=3)

    captions = " ".join(element.value for element in app.caption)
    assert len(drawn_rows(chart_spec(app))) == 2500
    assert "**PCA** of **2,500** points" in markdown_text(app)
    assert "3-D maps draw at most 2,500 points, so that they rotate" in captions
    assert f"This one draws {described}; the 2-D map draws {drawn_2d:,}" in captions

    app.radio(key="embeddings_dimensions").set_value(2)
    app.button(key="embeddings_project").click().run()
    assert len(drawn_rows(chart_spec(app))) == drawn_2d
    assert "3-D maps draw at most" not in " ".join(e.value for e in app.caption)


def test_3d_map_under_limit_has_no_note():
    app = open_embeddings(kind="items", sample_size=5000, dimensions=3)

    assert len(drawn_rows(chart_spec(app))) == N_ITEMS
    assert "3-D maps draw at most" not in " ".join(e.value for e in app.caption)


@pytest.mark.parametrize(
    ("sample_size", "ratio", "size"),
    [(5000, 2, 5.0), (10_000, 1, 3.0), (20_000, 1, 2.0)],
)
def test_large_map_webgl_settings(sample_size, ratio, size):
    app = open_embeddings(kind="relations", sample_size=sample_size, translation=False)

    config = chart_config(app)
    assert config == {"scrollZoom": True, "plotGlPixelRatio": ratio}
    assert point_traces(chart_spec(app))[0]["marker"]["size"] == size


# Translation overlay ----------------------------------------------------------


def test_translation_starts_at_user_point():
    app = open_embeddings(query={"user": "42"}, kind="users_items", top_k=4)

    spec = chart_spec(app)
    rows = drawn_rows(spec)
    user = trace_named(spec, "user 42 (p)")
    arrows = trace_named(spec, "p → p + r")
    top = trace_named(spec, "user 42's top 4 movies")
    start = np.array([decode(user["x"])[0], decode(user["y"])[0]])
    arrow_x, arrow_y = decode(arrows["x"]), decode(arrows["y"])
    assert len(rows) == N_USERS + N_ITEMS
    assert len(arrow_x) == 3 * 4  # start, end and a gap per segment
    np.testing.assert_allclose(arrow_x[0::3], start[0], rtol=1e-5)
    np.testing.assert_allclose(arrow_y[0::3], start[1], rtol=1e-5)
    assert len(decode(top["x"])) == 4
    assert app.number_input(key="embeddings_user").value == 42


def test_translation_on_relation_map():
    app = open_embeddings(query={"user": "7"}, kind="relations", sample_size=500)

    top = trace_named(chart_spec(app), "r of user 7's top 5")
    assert len(decode(top["x"])) == 5


# Search, selection and links --------------------------------------------------


def test_search_highlights_movie_and_lists_neighbours():
    app = open_embeddings(kind="users_items", search="movie:50")

    highlight = trace_named(chart_spec(app), "search: Star Wars (1977) (1)")
    selected = table_with(app, "genres")
    neighbours = table_with(app, "map rank")
    assert len(decode(highlight["x"])) == 1
    assert selected["label"].tolist() == ["Star Wars (1977)"]
    assert len(neighbours) == 10
    assert neighbours["distance"].is_monotonic_increasing
    assert "Nearest neighbours of Star Wars (1977)" in markdown_text(app)


def test_search_user_highlights_their_pairs():
    app = open_embeddings(kind="relations", sample_size=5000, search="user:13")

    selected = table_with(app, "genres")
    highlight = trace_named(chart_spec(app), "search: user 13")
    assert len(selected) > 1
    assert set(selected["user_id"]) == {13}
    assert len(decode(highlight["x"])) == len(selected)


def test_open_user_on_recommend():
    app = open_embeddings(kind="users", search="user:42")
    app.button(key="embeddings_open_recommend").click().run()

    assert not app.exception, app.exception
    assert app.number_input(key="recommend_user").value == 42
    assert app.query_params["user"] == "42"


def test_open_pair_on_attention():
    app = open_embeddings(kind="relations", sample_size=5000, search="movie:50")
    pair_user = int(table_with(app, "genres")["user_id"].iloc[0])
    app.button(key="embeddings_open_attention").click().run()

    assert not app.exception, app.exception
    assert app.number_input(key="attention_user").value == pair_user
    assert app.selectbox(key="attention_item").value == 50
    assert app.query_params["item"] == "50"


def test_movie_cannot_open_on_recommend():
    app = open_embeddings(kind="items", search="movie:50")

    assert app.button(key="embeddings_open_recommend").disabled


def test_draw_translation_of_listed_user():
    app = open_embeddings(kind="users", search="user:42", query={"user": "1"})
    app.button(key="embeddings_make_user").click().run()

    assert trace_named(chart_spec(app), "user 42 (p)")
    assert app.query_params["user"] == "42"


def test_plot_selection_lists_points():
    app = open_embeddings(kind="users_items", translation=False)
    chart = app.get("plotly_chart")[0]
    # NOTE: AppTest 1.67 cannot select chart points, so this sends the widget
    # state a browser would send through AppTest's private _run and _tree.
    selection = {
        "selection": {
            "points": [
                {"curve_number": 1, "point_index": 3, "customdata": 7},
                {"curve_number": 0, "point_index": 0, "customdata": [N_USERS]},
            ],
            "point_indices": [3, 0],
            "box": [],
            "lasso": [{"x": [0.0, 1.0, 1.0], "y": [0.0, 0.0, 1.0]}],
        }
    }
    states = app._tree.get_widget_states()
    states.widgets.append(
        WidgetState(id=chart.proto.id, string_value=json.dumps(selection))
    )
    app._run(states)

    assert not app.exception, app.exception
    selected = table_with(app, "genres")
    assert selected["label"].tolist() == ["user 8", "Toy Story (1995)"]
    app.run()
    assert table_with(app, "genres")["label"].tolist() == ["user 8", "Toy Story (1995)"]


# Degenerate weights, caching, UMAP --------------------------------------------


def test_nonfinite_vectors_reported_not_drawn():
    app = open_embeddings(run=BROKEN_RUN, kind="users_items", translation=False)

    warnings = [element.value for element in app.warning]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        f"3 of {N_USERS + N_ITEMS} vectors hold NaN or infinite values and are not "
        "drawn: user 1, user 6, Star Wars (1977)."
    )
    assert len(drawn_rows(chart_spec(app))) == N_USERS + N_ITEMS - 3


def test_projection_cached_in_run_folder(tiny_models_dir):
    folder = tiny_models_dir / TINY_RUN / "projections"
    open_embeddings(kind="items", min_dist=0.31)
    files = {path: path.stat().st_mtime_ns for path in folder.glob("pca-2d-*.parquet")}

    open_embeddings(kind="items", min_dist=0.31)
    again = {path: path.stat().st_mtime_ns for path in folder.glob("pca-2d-*.parquet")}
    open_embeddings(kind="items", min_dist=0.32)
    changed = set(folder.glob("pca-2d-*.parquet"))

    assert again == files
    assert len(changed - set(files)) == 1


def test_umap_on_small_sample(tiny_models_dir):
    folder = tiny_models_dir / TINY_RUN / "projections"
    before = set(folder.glob("umap-2d-*.parquet"))
    app = open_embeddings(kind="users", sample_size=250, method="umap", seed=3)

    assert (
        "PCA preview while UMAP computes" in chart_spec(app)["layout"]["title"]["text"]
    )
    deadline = time.monotonic() + TIMEOUT_S
    while set(folder.glob("umap-2d-*.parquet")) == before:
        assert time.monotonic() < deadline, "the UMAP job wrote no cache file"
        time.sleep(0.5)
    app.run()

    spec = chart_spec(app)
    text = markdown_text(app)
    assert spec["layout"]["title"]["text"] == "UMAP of users, run tiny"
    assert len(drawn_rows(spec)) == 250
    assert "**UMAP** of **250** points" in text
    assert "n_neighbors: `15`" in text
    assert "seed: `3`" in text

    fresh = open_embeddings(kind="users", sample_size=250, method="umap", seed=3)
    assert chart_spec(fresh)["layout"]["title"]["text"] == "UMAP of users, run tiny"


def test_other_pages_do_not_import_umap(tiny_models_dir):
    script = f"""
import json, sys
import lrml.projection
from streamlit.testing.v1 import AppTest
app = AppTest.from_file({str(APP)!r}, default_timeout={TIMEOUT_S})
app.query_params["run"] = {TINY_RUN!r}
app.run()
for page in ["pages/home.py", "pages/recommend.py", "pages/attention.py", "pages/train.py"]:
    app.switch_page(page).run()
    assert not app.exception, (page, app.exception)
names = sorted({{name.split(".")[0] for name in sys.modules}} & {{"umap", "numba", "pynndescent"}})
print(json.dumps(names))
"""
    env = {**os.environ, MODELS_DIR_ENV: str(tiny_models_dir), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_settings_survive_other_page():
    app = open_embeddings()
    app.selectbox(key="embeddings_kind").set_value("relations")
    app.select_slider(key="embeddings_sample_size").set_value(500)
    app.button(key="embeddings_project").click().run()
    app.selectbox(key="embeddings_colour").set_value("rating").run()
    app.toggle(key="embeddings_translation").set_value(False).run()

    app.switch_page("pages/recommend.py").run()
    app.switch_page(PAGE).run()

    assert not app.exception, app.exception
    assert len(drawn_rows(chart_spec(app))) == 500
    assert app.selectbox(key="embeddings_kind").value == "relations"
    assert app.selectbox(key="embeddings_colour").value == "rating"
    assert app.toggle(key="embeddings_translation").value is False
