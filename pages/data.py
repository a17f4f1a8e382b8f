"""Data: pick a dataset (a MovieLens release, a file on this machine or an upload),
check that it parses, and see what implicit-feedback filtering does to it."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from lrml.data import (
    DATASETS,
    DataError,
    Dataset,
    fetch_dataset,
    load_dataset,
    local_datasets,
    resolve_data_dir,
    save_upload,
)
from lrml.prepare import (
    InteractionStats,
    degree_histogram,
    describe_interactions,
    prepare_interactions,
)
from pages import shared

shared.ensure_navigation()

RELEASE, LOCAL, UPLOAD = "MovieLens release", "File or folder on this machine", "Upload"
SOURCE_KEY = "data_source"
RELEASE_KEY = "data_release"
PATH_KEY = "data_path"
UPLOAD_KEY = "data_upload"
DOWNLOAD_KEY = "data_download"
DOWNLOAD_REQUEST_KEY = "data_download_request"
SEPARATOR_KEY = "data_separator"
ENCODING_KEY = "data_encoding"
FEEDBACK_KEY = "data_feedback"
MIN_RATING_KEY = "data_min_rating"
K_CORE_KEY = "data_k_core"
# The dataset this page last loaded, for other pages such as Train to offer.
SELECTED_KEY = "data_selected_dataset"
# The filter last chosen here, kept outside widget state, which Streamlit
# deletes when another page runs. The Train page starts from these values.
SELECTED_MIN_RATING_KEY = "data_selected_min_rating"
SELECTED_K_CORE_KEY = "data_selected_k_core"
EVERY_RATING, THRESHOLD = "Every rating counts", "Ratings at or above a threshold"
SEPARATORS = {"": "detect", ",": "comma", "\t": "tab", ";": ";", "|": "|", "::": "::"}
ROLES = ("user", "item", "rating", "timestamp", "title")
# Sky blue for all interactions, orange for the kept ones.
COLOURS = (shared.OKABE_ITO[1], shared.OKABE_ITO[0])
UPLOAD_TYPES = ["csv", "tsv", "tab", "txt", "dat", "parquet", "pq"]


@st.cache_resource(max_entries=2, show_spinner="Loading the dataset…")
def cached_dataset(value: str, options: str, signature: tuple) -> Dataset:
    """Return the parsed dataset. ``signature`` is only part of the cache key."""
    return load_dataset(value, **json.loads(options))


@st.cache_resource(max_entries=8, show_spinner="Counting…")
def cached_stats(
    value: str,
    options: str,
    signature: tuple,
    min_rating: float | None,
    k_core: int | None,
) -> InteractionStats:
    dataset = cached_dataset(value, options, signature)
    kept = prepare_interactions(dataset.interactions, min_rating, k_core)
    return describe_interactions(kept)


def file_signature(value: str) -> tuple:
    """Return the size and modification time of a path, so an edited file reloads."""
    path = Path(value).expanduser()
    if value in DATASETS or not path.exists():
        return (value,)
    entries = [path] if path.is_file() else sorted(path.iterdir())
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in entries)


# Choosing the dataset ------------------------------------------------------------


def choose_release() -> tuple[str, dict] | None:
    name = st.selectbox(
        "Release",
        DATASETS,
        key=RELEASE_KEY,
        help="MovieLens releases in their original GroupLens layout.",
    )
    if name in local_datasets():
        return name, {}

    st.info(
        f"**{name}** is not in `{resolve_data_dir()}` yet. Download it from "
        "GroupLens here or with `python -m lrml fetch " + name + "`, or unzip "
        f"{name}.zip in that folder by hand."
    )
    st.button(
        f"Download {name}",
        key=DOWNLOAD_KEY,
        icon=":material/download:",
        on_click=st.session_state.__setitem__,
        args=(DOWNLOAD_REQUEST_KEY, name),
    )
    # A callback stores the request, because the button's own value is lost
    # when Streamlit reruns the script before this line, as AppTest does.
    if st.session_state.pop(DOWNLOAD_REQUEST_KEY, None) == name:
        download(name)
    return None


def download(name: str) -> None:
    bar = st.progress(0.0, text=f"Downloading {name}.zip…")

    def show(received: int, total: int | None) -> None:
        if total:
            text = f"{received / 2**20:.0f} of {total / 2**20:.0f} MiB"
            bar.progress(min(received / total, 1.0), text=text)

    try:
        fetch_dataset(name, progress=show)
    except DataError as error:
        bar.empty()
        st.error(str(error))
        return
    st.rerun()


def choose_local_path() -> tuple[str, dict] | None:
    path = st.text_input(
        "Path",
        key=PATH_KEY,
        placeholder="/home/me/ratings.csv",
        help="A CSV, TSV or parquet file with a user and an item column, or a "
        "MovieLens or RecBole folder.",
    )
    with st.expander("Read options"):
        separator = st.selectbox(
            "Separator",
            list(SEPARATORS),
            format_func=SEPARATORS.__getitem__,
            key=SEPARATOR_KEY,
        )
        encoding = st.selectbox("Encoding", ["utf-8", "latin-1"], key=ENCODING_KEY)
        st.caption("Column names; leave empty to find them by their usual names.")
        columns = {}
        for column, role in zip(st.columns(len(ROLES)), ROLES):
            name = column.text_input(role, key=f"data_column_{role}").strip()
            if name:
                columns[role] = name

    if not path.strip():
        st.info("Enter the path of a file or folder.")
        return None
    options = {"columns": columns or None, "sep": separator or None}
    options["encoding"] = encoding
    return str(Path(path.strip()).expanduser().resolve()), options


def choose_upload() -> tuple[str, dict] | None:
    uploaded = st.file_uploader(
        "Interaction file",
        type=UPLOAD_TYPES,
        key=UPLOAD_KEY,
        help="A file with a header line naming a user and an item column, and "
        "optionally rating, timestamp and title columns.",
    )
    if uploaded is None:
        st.info(
            "Upload a CSV, TSV or parquet file. It is checked, then saved under "
            f"`{resolve_data_dir() / 'uploads'}`."
        )
        return None

    try:
        path = save_upload(uploaded.name, uploaded.getvalue())
    except DataError as error:
        st.error(str(error))
        return None
    st.success(f"Saved as `{path}`.")
    return str(path), {}


# Filtering and statistics --------------------------------------------------------


def feedback_controls(dataset: Dataset) -> tuple[float | None, int | None]:
    ratings = dataset.interactions["rating"]
    low, high = float(ratings.min()), float(ratings.max())
    left, right = st.columns(2)
    feedback = left.radio(
        "Implicit feedback",
        [EVERY_RATING, THRESHOLD],
        key=FEEDBACK_KEY,
        help="LRML learns from positives only. By default, as in training, "
        "every rating counts as one, whatever its value.",
    )
    min_rating = None
    if feedback == THRESHOLD:
        min_rating = left.number_input(
            "Minimum rating",
            min_value=low,
            max_value=high,
            value=min(max(4.0, low), high),
            step=0.5,
            key=MIN_RATING_KEY,
        )
    k_core = right.number_input(
        "k-core",
        min_value=1,
        max_value=10_000,
        value=1,
        step=1,
        key=K_CORE_KEY,
        help="Keep only users and items with at least this many interactions, "
        "repeatedly, until all of them have. 1 keeps everything.",
    )
    return min_rating, (int(k_core) if k_core > 1 else None)


def show_counts(before: InteractionStats, after: InteractionStats) -> None:
    values = {
        "Users": (before.users, after.users, "{:,}"),
        "Items": (before.items, after.items, "{:,}"),
        "Interactions": (before.interactions, after.interactions, "{:,}"),
        "Density": (before.density, after.density, "{:.3%}"),
    }
    for column, (label, (old, new, form)) in zip(st.columns(4), values.items()):
        change = new - old
        column.metric(
            label,
            form.format(new),
            delta=None if change == 0 else form.format(change),
            help=f"Before filtering: {form.format(old)}",
        )


def degree_chart(
    before: InteractionStats, after: InteractionStats, kind: str
) -> go.Figure:
    figure = go.Figure()
    for (name, stats), colour in zip((("all", before), ("kept", after)), COLOURS):
        counts = stats.user_counts if kind == "user" else stats.item_counts
        table = degree_histogram(counts)
        figure.add_bar(
            x=table["label"], y=table["count"], name=name, marker_color=colour
        )
    partner = "items" if kind == "user" else "users"
    figure.update_layout(
        title=f"Interactions per {kind}",
        xaxis_title=f"distinct {partner}",
        yaxis_title=f"{kind}s",
        barmode="group",
        height=320,
        margin={"t": 40, "b": 10},
    )
    return figure


def rating_chart(before: InteractionStats, after: InteractionStats) -> go.Figure:
    figure = go.Figure()
    for (name, stats), colour in zip((("all", before), ("kept", after)), COLOURS):
        counts = stats.rating_counts
        labels = [f"{value:g}" for value in counts.index]
        figure.add_bar(x=labels, y=counts.values, name=name, marker_color=colour)
    figure.update_layout(
        title="Ratings",
        xaxis_title="rating",
        yaxis_title="interactions",
        barmode="group",
        height=320,
        margin={"t": 40, "b": 10},
    )
    return figure


def show_usage(value: str, min_rating: float | None, k_core: int | None) -> None:
    st.subheader("Train on it")
    command = f"python -m lrml train --dataset {shlex.quote(value)}"
    if min_rating is not None:
        command += f" --min-rating {min_rating:g}"
    if k_core is not None:
        command += f" --k-core {k_core}"
    st.code(command, language="bash")
    st.page_link(
        shared.TRAIN_PAGE,
        label="Go to the Train page",
        icon=":material/model_training:",
    )
    if min_rating is not None or k_core is not None:
        st.caption(
            "The Train page starts with this dataset and the filters above; "
            "training then uses only the kept interactions."
        )


# Page ------------------------------------------------------------------------------


st.title("Data")
st.caption(
    "Load a MovieLens release or your own interactions, check them, and preview "
    "how implicit-feedback filtering changes them. Parsed files are cached under "
    f"`{resolve_data_dir() / 'cache'}`, so the second load is fast."
)
source = st.radio("Source", [RELEASE, LOCAL, UPLOAD], key=SOURCE_KEY, horizontal=True)
choosers = {RELEASE: choose_release, LOCAL: choose_local_path, UPLOAD: choose_upload}
chosen = choosers[source]()
if chosen is None:
    st.stop()

value, options = chosen
options_key = json.dumps(options, sort_keys=True)
signature = file_signature(value)
try:
    dataset = cached_dataset(value, options_key, signature)
except DataError as error:
    st.error(str(error))
    st.stop()
if st.session_state.get(SELECTED_KEY) != value:
    # Filters chosen for another dataset may not suit this one.
    for key in (FEEDBACK_KEY, MIN_RATING_KEY, K_CORE_KEY):
        st.session_state.pop(key, None)
st.session_state[SELECTED_KEY] = value

demographics = (
    f"demographics for {len(dataset.users):,} users"
    if len(dataset.users)
    else "no user demographics"
)
st.markdown(
    f"**{dataset.name}** from `{dataset.source}`: {len(dataset.items):,} items in "
    f"the catalogue, {demographics}."
)
min_rating, k_core = feedback_controls(dataset)
st.session_state[SELECTED_MIN_RATING_KEY] = min_rating
st.session_state[SELECTED_K_CORE_KEY] = k_core
try:
    before = cached_stats(value, options_key, signature, None, None)
    after = cached_stats(value, options_key, signature, min_rating, k_core)
except DataError as error:
    st.error(str(error))
    st.stop()

show_counts(before, after)
left, right = st.columns(2)
left.plotly_chart(degree_chart(before, after, "user"), width="stretch")
right.plotly_chart(degree_chart(before, after, "item"), width="stretch")
st.plotly_chart(rating_chart(before, after), width="stretch")

with st.expander("First rows"):
    st.dataframe(dataset.interactions.head(100), hide_index=True)
    st.dataframe(dataset.items.head(100), hide_index=True)
show_usage(value, min_rating, k_core)
