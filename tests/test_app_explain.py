"""AppTest tests of the Recommend and Attention pages against tiny MovieLens-100K runs.

Two runs train once per module, one epoch each: ``tiny`` is the run the pages
show and ``other`` (fewer memory slots) is the baseline for comparisons.
$LRML_MODELS_DIR points at their folder, and `jobs.start_training` is replaced
so that no test can spawn a training process.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from streamlit.runtime.memory_media_file_storage import _calculate_file_id
from streamlit.testing.v1 import AppTest

from lrml import jobs
from lrml.attention import muted_ranking
from lrml.config import TrainConfig
from lrml.inference import LoadedRun, load_run, recommend
from lrml.runs import MODELS_DIR_ENV, create_run
from lrml.slots import CACHE_FOLDER, cached_slot_statistics

pytestmark = pytest.mark.slow

APP = Path(__file__).resolve().parent.parent / "app.py"
TIMEOUT_S = 60
TINY_RUN = "tiny"
OTHER_RUN = "other"
SLOTS = 4
RECOMMEND = "pages/recommend.py"
ATTENTION = "pages/attention.py"


@pytest.fixture(scope="module")
def tiny_models_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("explain-models")
    other = TrainConfig(epochs=1, embedding_dim=8, memory_size=3, seed=3)
    jobs.train_in_foreground(create_run(other, name=OTHER_RUN, root=folder))
    # Trained second, so it is the newest run and the one the pages select.
    tiny = TrainConfig(epochs=1, embedding_dim=8, memory_size=SLOTS)
    jobs.train_in_foreground(create_run(tiny, name=TINY_RUN, root=folder))
    return folder


@pytest.fixture(scope="module")
def tiny(tiny_models_dir) -> LoadedRun:
    return load_run(tiny_models_dir / TINY_RUN)


@pytest.fixture(autouse=True)
def models_dir(tiny_models_dir, monkeypatch) -> Path:
    """Replace conftest's empty models folder, in which app.py would start training."""
    monkeypatch.setenv(MODELS_DIR_ENV, str(tiny_models_dir))
    return tiny_models_dir


@pytest.fixture(autouse=True)
def no_training(monkeypatch) -> None:
    monkeypatch.setattr(jobs, "start_training", lambda run: 0)


def open_page(page: str, **query: str) -> AppTest:
    """Run app.py with the given query parameters, then switch to ``page``."""
    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    for key, value in query.items():
        app.query_params[key] = value
    app.run()
    app.switch_page(page).run()
    assert not app.exception, app.exception
    return app


def find_table(app: AppTest, *columns: str) -> pd.DataFrame:
    """Return the first st.dataframe with all of ``columns``."""
    for table in app.dataframe:
        if set(columns) <= set(table.value.columns):
            return table.value
    raise AssertionError(f"no dataframe with columns {columns} on the page")


def select_row(app: AppTest, key: str, row: int) -> None:
    app.session_state[key] = {"selection": {"rows": [row], "columns": [], "cells": []}}


def texts(elements) -> list[str]:
    return [element.value for element in elements]


# Recommend ---------------------------------------------------------------------


def test_search_filters_by_demographics(tiny):
    app = open_page(RECOMMEND, user="1")
    app.slider(key="recommend_search_age").set_value((30, 45))
    app.multiselect(key="recommend_search_gender").set_value(["F"])
    app.multiselect(key="recommend_search_occupation").set_value(["educator"]).run()

    found = find_table(app, "occupation")
    people = tiny.dataset.users
    expected = people[
        people["age"].between(30, 45)
        & (people["gender"] == "F")
        & (people["occupation"] == "educator")
    ]
    assert not app.exception, app.exception
    assert sorted(found["user_id"]) == sorted(expected["user_id"])
    assert len(found) > 0


def test_search_row_selects_user():
    app = open_page(RECOMMEND, user="1")
    app.multiselect(key="recommend_search_occupation").set_value(["doctor"]).run()
    found = find_table(app, "occupation")

    select_row(app, "recommend_search_table", 2)
    app.run()

    chosen = int(found["user_id"].iloc[2])
    assert app.query_params["user"] == str(chosen)
    assert app.number_input(key="recommend_user").value == chosen
    assert f"**User {chosen}**" in texts(app.markdown)[0]


def test_random_matching_user_matches_filter(tiny):
    people = tiny.dataset.users
    doctors = set(people.loc[people["occupation"] == "doctor", "user_id"])
    app = open_page(RECOMMEND, user="1")
    app.multiselect(key="recommend_search_occupation").set_value(["doctor"]).run()

    for _ in range(3):
        app.button(key="recommend_search_random").click().run()

        assert int(app.query_params["user"]) in doctors
        assert len(find_table(app, "score")) == 10


def test_random_user_picks_valid_id(tiny):
    app = open_page(RECOMMEND, user="1")

    app.button(key="recommend_user_random").click().run()

    assert int(app.query_params["user"]) in set(tiny.split.user_vocab.ids)
    assert not app.exception, app.exception


def test_search_orders_by_activity(tiny):
    counts = tiny.dataset.interactions["user_id"].value_counts()
    app = open_page(RECOMMEND, user="1")

    app.radio(key="recommend_search_order").set_value("most_active").run()
    most = find_table(app, "occupation")
    app.radio(key="recommend_search_order").set_value("least_active").run()
    least = find_table(app, "occupation")

    assert most["ratings"].iloc[0] == counts.max()
    assert most["ratings"].is_monotonic_decreasing
    assert least["ratings"].iloc[0] == counts.min()


def test_top_k_shows_both_distances():
    app = open_page(RECOMMEND, user="7")
    app.slider(key="recommend_k").set_value(100).run()

    top = find_table(app, "score")
    assert len(top) == 100
    assert (top["distance_with_relation"] == -top["score"]).all()
    assert (top["distance_without_relation"] > 0).all()


def test_genre_filter_keeps_genre():
    app = open_page(RECOMMEND, user="7")
    app.multiselect(key="recommend_genres").set_value(["Horror"]).run()

    top = find_table(app, "score")
    assert len(top) == 10
    assert top["genres"].str.contains("Horror").all()


def test_genre_smaller_than_k_warns():
    app = open_page(RECOMMEND, user="7")
    app.slider(key="recommend_k").set_value(100)
    app.multiselect(key="recommend_genres").set_value(["Film-Noir"]).run()

    top = find_table(app, "score")
    warnings = texts(app.warning)
    assert len(top) < 100
    assert any(
        f"K is 100, but only {len(top)} unseen movies of the genre(s) Film-Noir" in text
        for text in warnings
    )


def test_csv_download_holds_list(tiny):
    app = open_page(RECOMMEND, user="42")
    button = app.download_button(key="recommend_download")

    expected = recommend(tiny, tiny.user_index(42), 10).drop(columns=["item_index"])
    expected.insert(0, "user_id", 42)
    expected.insert(0, "run", TINY_RUN)
    name = f"{TINY_RUN}-user42-top10.csv"
    # NOTE: _calculate_file_id is Streamlit's private hash of media files; it
    # names the served file, so matching it proves the CSV's bytes.
    file_id = _calculate_file_id(
        expected.to_csv(index=False).encode(), "text/csv", name
    )
    assert button.label == "Download the list as CSV"
    assert button.proto.url.endswith(f"/{file_id}.csv")


def test_baseline_run_is_compared():
    app = open_page(RECOMMEND, user="42")
    assert app.selectbox(key="recommend_baseline").options == [
        "no comparison",
        OTHER_RUN,
    ]

    app.selectbox(key="recommend_baseline").set_value(OTHER_RUN).run()

    lists = [table.value for table in app.dataframe if "in other list" in table.value]
    metrics = {metric.label: metric.value for metric in app.metric}
    assert not app.exception, app.exception
    assert len(lists) == 2
    shared_count = int(lists[0]["in other list"].sum())
    assert shared_count == int(lists[1]["in other list"].sum())
    assert metrics["Movies in both lists"] == f"{shared_count} of 10"
    assert any("memory_size 4 against 3" in text for text in texts(app.caption))


def test_similar_movies_follow_selection():
    app = open_page(RECOMMEND, user="42", item="50")

    similar = find_table(app, "distance")
    assert app.selectbox(key="recommend_similar_item").value == 50
    assert len(similar) == 10
    assert similar["distance"].is_monotonic_increasing
    assert "Star Wars" not in set(similar["title"])


def test_explain_opens_attention_with_pair(tiny):
    chosen = int(recommend(tiny, tiny.user_index(42), 10)["item_id"].iloc[2])
    app = open_page(RECOMMEND, user="42")

    select_row(app, "recommend_top_table", 2)
    app.run()
    assert app.query_params["item"] == str(chosen)
    app.button(key="recommend_explain").click().run()

    assert [title.value for title in app.title] == ["Attention"]
    assert app.query_params["user"] == "42"
    assert app.query_params["item"] == str(chosen)
    assert app.number_input(key="attention_user").value == 42
    assert app.selectbox(key="attention_item").value == chosen


# Attention ---------------------------------------------------------------------


def test_heatmap_covers_top_k():
    app = open_page(ATTENTION, user="42", item="50")
    app.slider(key="attention_heatmap_k").set_value(15).run()

    heatmap = find_table(app, "movie")
    assert app.get("plotly_chart")
    assert "attention_heatmap" in [chart.key for chart in app.get("plotly_chart")]
    assert len(heatmap) == 15
    assert list(heatmap.columns[1:]) == [f"slot {slot}" for slot in range(SLOTS)]
    assert heatmap.iloc[:, 1:].sum(axis=1).round(5).eq(1.0).all()


def test_pair_steps_are_shown():
    app = open_page(ATTENTION, user="42", item="50")

    joint = find_table(app, "p * q")
    keys = find_table(app, "logit (p ⊙ q) · k")
    softmax = find_table(app, "exp(logit - max)")
    assert len(joint) == 8
    assert (joint["p * q"] - joint["p"] * joint["q"]).abs().max() < 1e-6
    assert len(keys) == SLOTS
    assert softmax["weight"].sum() == pytest.approx(1.0, abs=1e-5)


def test_what_if_changes_ranks(tiny):
    app = open_page(ATTENTION, user="42", item="50")
    before = find_table(app, "rank_before")
    assert (before["move"] == 0).all()

    app.multiselect(key="attention_mute").set_value([0, 1, 2]).run()

    after = find_table(app, "rank_before")
    expected = muted_ranking(tiny, tiny.user_index(42), {0, 1, 2}, 10)
    expected = expected[expected["rank_after"] <= 10]
    assert not app.exception, app.exception
    assert list(after["title"]) == list(expected["title"])
    assert list(after["move"]) == list(expected["move"])
    assert (after["move"] != 0).any()
    assert any(text.startswith("Muted slots: 0, 1, 2.") for text in texts(app.caption))


def test_muting_every_slot_shows_error():
    app = open_page(ATTENTION, user="42", item="50")

    app.multiselect(key="attention_mute").set_value(list(range(SLOTS))).run()

    assert not app.exception, app.exception
    assert any(
        "at least one of the 4 slots unmuted" in text for text in texts(app.error)
    )


def test_single_slot_relation_ranks():
    app = open_page(ATTENTION, user="42", item="50")

    app.selectbox(key="attention_single_slot").set_value(3).run()

    single = find_table(app, "rank_full")
    assert list(single["rank"]) == list(range(1, 11))
    assert single["score"].is_monotonic_decreasing


def test_slot_meanings_are_cached(tiny_models_dir, tiny):
    app = open_page(ATTENTION, user="42", item="50")

    slots = find_table(app, "mean_rating")
    assert len(slots) == SLOTS
    assert slots["name"].str.len().gt(0).all()
    assert (slots["pairs"] > 0).all()
    cached = list((tiny_models_dir / TINY_RUN / CACHE_FOLDER).glob("*/slots.parquet"))
    assert len(cached) == 1

    app.selectbox(key="attention_slot").set_value(2).run()
    movies = find_table(app, "title", "mean_weight")
    expected = cached_slot_statistics(tiny).movies
    assert list(movies["title"]) == list(expected[expected["slot"] == 2]["title"])
    assert len(movies) > 0
    assert movies["mean_weight"].is_monotonic_decreasing


# Across pages ------------------------------------------------------------------


def test_selection_survives_page_switches():
    app = open_page(RECOMMEND, run=TINY_RUN, user="42", item="50")

    app.switch_page(ATTENTION).run()
    assert app.number_input(key="attention_user").value == 42
    assert app.selectbox(key="attention_item").value == 50

    app.number_input(key="attention_user").set_value(7).run()
    app.switch_page(RECOMMEND).run()
    assert app.number_input(key="recommend_user").value == 7
    assert app.selectbox(key="recommend_similar_item").value == 50
    assert dict(app.query_params) == {"run": TINY_RUN, "user": "7", "item": "50"}


def test_pages_show_baseline_run_from_url():
    app = open_page(ATTENTION, run=OTHER_RUN, user="42", item="50")

    slots = find_table(app, "mean_rating")
    assert len(slots) == 3
    assert app.query_params["run"] == OTHER_RUN
