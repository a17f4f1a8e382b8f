"""Home: what LRML computes, the selected run's status and test metrics, and the data."""

from pathlib import Path

import pandas as pd
import streamlit as st

from lrml.config import TrainConfig
from lrml.data import Dataset
from lrml.run_data import filter_description, run_dataset
from lrml.runs import ACTIVE_STATES, Run
from pages import shared

shared.ensure_navigation()

DEFAULT_DATASET = "ml-100k"
STATUS_REFRESH_SECONDS = 2

# Test metric keys written by lrml.evaluation, with their labels.
TEST_METRICS = {
    "sampled_hr@10": "Sampled HR@10",
    "sampled_ndcg@10": "Sampled nDCG@10",
    "full_hr@10": "Full HR@10",
    "full_ndcg@10": "Full nDCG@10",
    "full_coverage@10": "Coverage@10",
}


def show_introduction() -> None:
    st.title("LRML Explorer")
    st.markdown(
        "**Latent Relational Metric Learning** (Tay, Luu and Hui, WWW 2018) puts "
        "users and movies in one metric space and ranks a movie by how close it "
        "lies to the user. Unlike plain metric learning, it first moves the user "
        "vector *p* by a relation vector *r* built for that pair: attention over "
        "*N* memory slots, keyed on the element-wise product of *p* and the item "
        "vector *q*, mixes the slots' memory vectors into *r*. Training pushes "
        "*p + r* towards the movies a user rated and away from sampled others, by "
        "a hinge margin."
    )
    st.latex(
        r"a = \operatorname{softmax}\big((p \odot q)\,K^\top\big), \qquad "
        r"r = a\,M, \qquad "
        r"s(p, q) = -\lVert p + r - q \rVert_2"
    )
    st.caption(
        "K and M are the N × d key and memory matrices. A run with "
        "`distance = squared_l2` scores with the squared distance."
    )


def show_status(run: Run, status: dict) -> None:
    columns = st.columns(4)
    columns[0].metric("State", status.get("state", "unknown"))
    columns[1].metric("Epochs done", f"{status.get('epoch', 0)} / {run.config.epochs}")
    columns[2].metric("Best epoch", status.get("best_epoch") or "–")
    columns[3].metric("Weights", "saved" if run.has_weights() else "not yet")
    if status.get("message"):
        st.caption(f"Status message: {status['message']}")


@st.fragment(run_every=STATUS_REFRESH_SECONDS)
def show_live_status(run_path: str) -> None:
    """Redraw a training run's status, and rerun the page once the run ends."""
    run = Run(Path(run_path))
    status = run.status()
    st.info(shared.training_message(run, status), icon=":material/hourglass_top:")
    show_status(run, status)
    if status.get("state") not in ACTIVE_STATES:
        st.rerun()


def show_run(run: Run | None) -> None:
    st.header("Selected run")
    if run is None:
        st.info("No training run exists yet. Start one on the Train page.")
        return

    st.markdown(f"**{run.name}**, in `{run.path}`")
    status = run.status()
    if status.get("state") in ACTIVE_STATES:
        show_live_status(str(run.path))
    else:
        show_status(run, status)

    metrics = run.test_metrics()
    if metrics is None:
        st.caption("Test metrics appear here once the run ends.")
        return
    st.subheader("Test metrics")
    columns = st.columns(len(TEST_METRICS))
    for column, (key, label) in zip(columns, TEST_METRICS.items()):
        value = metrics.get(key)
        column.metric(label, "–" if value is None else f"{value:.4f}")
    st.caption(
        "Leave-one-out test: each user's latest rating is held out. Sampled metrics "
        "rank it among 100 movies the user never rated, and full metrics rank it among "
        "every movie the user has not rated. Coverage@10 is the share of the "
        "catalogue that appears in at least one user's top 10."
    )


def show_dataset(dataset: Dataset, config: TrainConfig | None) -> None:
    """Show the statistics of the interactions the selected run trains on."""
    st.header("Dataset")
    kept = run_dataset(config, dataset) if config is not None else dataset
    interactions = kept.interactions
    n_users = interactions["user_id"].nunique()
    n_items = interactions["item_id"].nunique()
    density = len(interactions) / (n_users * n_items)
    dates = pd.to_datetime(interactions["timestamp"], unit="s")

    columns = st.columns(5)
    columns[0].metric("Users", f"{n_users:,}")
    columns[1].metric("Movies rated", f"{n_items:,}")
    columns[2].metric("Ratings", f"{len(interactions):,}")
    columns[3].metric("Density", f"{density:.2%}")
    columns[4].metric("Mean rating", f"{interactions['rating'].mean():.2f}")
    if kept is dataset:
        signal = "every rating counts as a positive, whatever its value."
    else:
        signal = (
            f"the selected run keeps {filter_description(config)}: "
            f"{len(interactions):,} of {len(dataset.interactions):,} ratings count "
            "as positives."
        )
    st.caption(
        f"{dataset.name}: ratings from {dates.min():%Y-%m-%d} to {dates.max():%Y-%m-%d}, "
        f"loaded from {dataset.source}. LRML trains on the implicit signal: {signal}"
    )


def show_links() -> None:
    st.header("Explore")
    columns = st.columns(4)
    columns[0].page_link(
        "pages/train.py", label="Train a run", icon=":material/model_training:"
    )
    columns[1].page_link(
        "pages/recommend.py",
        label="Recommend for a user",
        icon=":material/recommend:",
    )
    columns[2].page_link(
        "pages/attention.py", label="Explain one pair", icon=":material/bar_chart:"
    )
    columns[3].page_link(
        "pages/embeddings.py",
        label="Map the embeddings",
        icon=":material/scatter_plot:",
    )


show_introduction()
show_links()
run = shared.current_run()
show_run(run)
try:
    dataset = shared.cached_dataset(run.config.dataset if run else DEFAULT_DATASET)
except (OSError, ValueError) as error:
    st.error(f"Could not load the dataset: {error}")
    st.stop()
try:
    show_dataset(dataset, run.config if run else None)
except ValueError as error:
    st.error(f"Could not filter the dataset as the run's settings ask: {error}")
