"""Attention: how LRML builds one pair's relation, and what each memory slot means."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from lrml.attention import (
    PairAttention,
    attention_matrix,
    memory_tables,
    muted_ranking,
    pair_attention,
    single_slot_recommend,
)
from lrml.inference import MAX_K, LoadedRun, recommend
from lrml.slots import SlotStats, cached_slot_statistics
from pages import shared

shared.ensure_navigation()

DEFAULT_K = 10
MAX_HEATMAP_MOVIES = 50
NUMBER = st.column_config.NumberColumn(format="%.4f")
YEAR = st.column_config.NumberColumn(format="%d")


@st.cache_data(max_entries=8, show_spinner="Computing slot statistics…")
def slot_stats(run_path: str, weights_mtime_ns: int) -> SlotStats:
    """Return the run's slot statistics, cached in memory and as parquet in the run."""
    return cached_slot_statistics(shared.cached_loaded_run(run_path, weights_mtime_ns))


# One pair ----------------------------------------------------------------------


def show_summary(attention: PairAttention, stats: SlotStats) -> None:
    weights = attention.weights
    top_slot = int(np.argmax(weights))
    change = attention.distance - attention.distance_without_relation
    columns = st.columns(5)
    columns[0].metric("Score", f"{-attention.distance:.4f}", help="-||p + r - q||")
    columns[1].metric(
        "Distance with relation", f"{attention.distance:.4f}", help="||p + r - q||"
    )
    columns[2].metric(
        "Distance without relation",
        f"{attention.distance_without_relation:.4f}",
        help="||p - q||",
    )
    columns[3].metric(
        "Change from r",
        f"{change:+.4f}",
        help="Distance with relation minus distance without. Negative: the "
        "relation vector brings the user closer to the movie.",
    )
    columns[4].metric(
        "Top slot",
        f"{top_slot}",
        help=f"{stats.label(top_slot)}, weight {weights[top_slot]:.4f}",
    )


def add_reference_line(
    figure: go.Figure, value: float, label: str, vertical: bool = False
) -> None:
    """Draw a dotted line across the plot at ``value``, labelled beyond its end.

    A plain layout shape, because ``add_hline`` in plotly 7.1 spends longer on
    its subplot handling than the rest of the figure takes to build.
    """
    axis, across = ("x", "y") if vertical else ("y", "x")
    shape = {
        "type": "line",
        "line": {"dash": "dot", "color": shared.OKABE_ITO[5]},
        f"{axis}ref": axis,
        f"{axis}0": value,
        f"{axis}1": value,
        f"{across}ref": "paper",
        f"{across}0": 0,
        f"{across}1": 1,
    }
    annotations = []
    if label:
        annotations.append(
            {
                "text": label,
                "showarrow": False,
                f"{axis}ref": axis,
                axis: value,
                f"{across}ref": "paper",
                across: 1,
                # Outside the plot, in a right margin the caller leaves for it.
                "xanchor": "left",
                "yanchor": "middle",
            }
        )
    figure.update_layout(shapes=[shape], annotations=annotations)


def weights_figure(slots: pd.DataFrame, uniform: float) -> go.Figure:
    figure = go.Figure(
        go.Bar(
            x=slots["slot"],
            y=slots["weight"],
            marker_color=shared.OKABE_ITO[4],
            customdata=slots[["name", "logit"]],
            hovertemplate="slot %{x}: %{customdata[0]}<br>weight %{y:.4f}<br>"
            "logit %{customdata[1]:.4f}<extra></extra>",
        )
    )
    add_reference_line(figure, uniform, "uniform 1/N")
    figure.update_xaxes(title_text="memory slot", dtick=1 if len(slots) <= 40 else None)
    figure.update_yaxes(
        title_text="attention weight",
        range=[0, max(uniform, slots["weight"].max()) * 1.15],
    )
    figure.update_layout(height=340, margin={"t": 10, "b": 10, "r": 90})
    return figure


def show_weights(attention: PairAttention, stats: SlotStats) -> None:
    slots = attention.slots()
    slots.insert(1, "name", stats.slots["name"].to_numpy())
    uniform = 1.0 / len(slots)
    chart_column, table_column = st.columns([3, 2])
    with chart_column:
        st.plotly_chart(weights_figure(slots, uniform), key="attention_chart")
        top = slots.sort_values("weight", ascending=False).head(3)
        described = ", ".join(
            f"{row.slot} ({row.name}, {row.weight:.3f})" for row in top.itertuples()
        )
        st.caption(
            f"Attention over the {len(slots)} slots. The weights sum to "
            f"{attention.weights.sum():.6f}. Largest: {described}. The dotted line "
            f"is the uniform weight {uniform:.3f}."
        )
    with table_column:
        st.dataframe(
            slots,
            hide_index=True,
            height=340,
            column_config={
                "logit": NUMBER,
                "weight": st.column_config.ProgressColumn(
                    format="%.4f", min_value=0.0, max_value=1.0
                ),
            },
        )


def show_steps(loaded: LoadedRun, attention: PairAttention, stats: SlotStats) -> None:
    st.subheader("Step by step")
    keys, memories = memory_tables(loaded.model)
    dimensions = attention.dimensions()
    joint_tab, keys_tab, softmax_tab, relation_tab = st.tabs(
        ["1 · p ⊙ q", "2 · keys and logits", "3 · softmax", "4 · relation r"]
    )
    with joint_tab:
        st.markdown(
            "The **joint embedding** `p ⊙ q` multiplies the user and movie vectors "
            "dimension by dimension."
        )
        figure = grouped_bars(dimensions, ["p", "q", "p * q"], (4, 0, 2))
        st.plotly_chart(figure, key="attention_joint")
        st.dataframe(
            dimensions[["dimension", "p", "q", "p * q"]],
            hide_index=True,
            height=200,
            column_config={name: NUMBER for name in ("p", "q", "p * q")},
        )
    with keys_tab:
        st.markdown(
            "Each slot has a **key** `kⱼ`. The logit of slot j is `(p ⊙ q) · kⱼ`, "
            "so a slot scores high when its key points the same way as `p ⊙ q`."
        )
        show_keys(keys, attention, stats)
    with softmax_tab:
        shift = attention.logits - attention.logits.max()
        softmax = pd.DataFrame(
            {
                "slot": np.arange(len(attention.logits)),
                "logit": attention.logits,
                "exp(logit - max)": np.exp(shift),
                "weight": attention.weights,
            }
        )
        st.markdown(
            "The **softmax** turns the logits into weights: "
            "`aⱼ = exp(logitⱼ) / Σ exp(logit)`. Subtracting the largest logit first "
            "leaves the weights unchanged. Here the exponentials sum to "
            f"{np.exp(shift).sum():.4f}."
        )
        st.dataframe(
            softmax,
            hide_index=True,
            column_config={name: NUMBER for name in softmax.columns[1:]},
        )
    with relation_tab:
        st.markdown(
            "The **relation** `r = Σ aⱼ mⱼ` mixes the memory vectors by the weights. "
            "The score is `-‖p + r − q‖`: the translated user `p + r` should land "
            "near the movie."
        )
        show_relation(dimensions, memories, attention)


def grouped_bars(
    dimensions: pd.DataFrame, columns: list[str], colours: tuple[int, ...]
) -> go.Figure:
    """Return one bar per embedding dimension and vector, the vectors side by side."""
    figure = go.Figure(
        [
            go.Bar(
                x=dimensions["dimension"],
                y=dimensions[column],
                name=column,
                marker_color=shared.OKABE_ITO[colour],
            )
            for column, colour in zip(columns, colours)
        ]
    )
    figure.update_xaxes(title_text="dimension")
    figure.update_layout(barmode="group", height=300, margin={"t": 10, "b": 10})
    return figure


def show_keys(keys: np.ndarray, attention: PairAttention, stats: SlotStats) -> None:
    limit = float(np.abs(keys).max()) or 1.0
    figure = go.Figure(
        go.Heatmap(
            z=keys,
            colorscale=shared.DIVERGING_SCALE,
            zmin=-limit,
            zmax=limit,
            colorbar={"title": {"text": "key value"}},
            hovertemplate="slot %{y}, dimension %{x}: %{z:.4f}<extra></extra>",
        )
    )
    figure.update_xaxes(title_text="dimension")
    figure.update_yaxes(title_text="slot", autorange="reversed")
    figure.update_layout(height=80 + 18 * len(keys), margin={"t": 10, "b": 10})
    st.plotly_chart(figure, key="attention_keys")
    st.caption(
        f"The {keys.shape[0]} × {keys.shape[1]} key matrix, one row per slot. "
        "Orange is negative and purple positive. The table lists each slot's "
        "logit for this pair."
    )
    st.dataframe(
        pd.DataFrame(
            {
                "slot": np.arange(len(keys)),
                "name": stats.slots["name"].to_numpy(),
                "‖k‖": np.linalg.norm(keys, axis=1),
                "logit (p ⊙ q) · k": attention.logits,
            }
        ),
        hide_index=True,
        column_config={"‖k‖": NUMBER, "logit (p ⊙ q) · k": NUMBER},
    )


def show_relation(
    dimensions: pd.DataFrame, memories: np.ndarray, attention: PairAttention
) -> None:
    figure = grouped_bars(dimensions, ["r", "p + r - q"], (5, 1))
    st.plotly_chart(figure, key="attention_relation")
    st.dataframe(
        dimensions[["dimension", "r", "p + r - q"]],
        hide_index=True,
        height=200,
        column_config={"r": NUMBER, "p + r - q": NUMBER},
    )
    st.latex(
        rf"\lVert p + r - q \rVert = {attention.distance:.4f}"
        rf"\qquad \lVert p - q \rVert = {attention.distance_without_relation:.4f}"
        rf"\qquad \lVert r \rVert = {np.linalg.norm(attention.relation):.4f}"
        rf"\qquad \max_j \lVert m_j \rVert = {np.linalg.norm(memories, axis=1).max():.4f}"
    )


# A user's top-K ----------------------------------------------------------------


def heatmap_figure(
    matrix: np.ndarray, labels: list[str], slot_names: np.ndarray
) -> go.Figure:
    figure = go.Figure(
        go.Heatmap(
            z=matrix,
            x=[str(slot) for slot in range(matrix.shape[1])],
            y=labels,
            colorscale=shared.SEQUENTIAL_SCALE,
            colorbar={"title": {"text": "weight"}},
            customdata=np.tile(slot_names, (len(labels), 1)),
            hovertemplate="%{y}<br>slot %{x}: %{customdata}<br>weight %{z:.4f}"
            "<extra></extra>",
        )
    )
    figure.update_xaxes(title_text="memory slot", type="category")
    figure.update_yaxes(autorange="reversed")
    figure.update_layout(height=80 + 24 * len(labels), margin={"t": 10, "b": 10})
    return figure


@st.fragment
def show_heatmap(
    loaded: LoadedRun, user_index: int, ranking: pd.DataFrame, stats: SlotStats
) -> None:
    st.subheader("Attention over this user's top movies")
    k = st.slider(
        "Movies",
        1,
        len(ranking),
        min(DEFAULT_K, len(ranking)),
        key="attention_heatmap_k",
    )
    top = ranking.head(k)
    matrix = attention_matrix(
        loaded.model, user_index, top["item_index"].to_numpy(copy=True)
    )
    labels = [
        f"{rank}. {shared.movie_label(title, year)}"
        for rank, title, year in zip(top["rank"], top["title"], top["year"])
    ]
    slot_names = stats.slots["name"].to_numpy()

    st.plotly_chart(heatmap_figure(matrix, labels, slot_names), key="attention_heatmap")
    top_slots = matrix.argmax(axis=1)
    common = np.bincount(top_slots, minlength=matrix.shape[1]).argmax()
    st.caption(
        f"Each row is one of the user's top {len(top)} unseen movies and sums to 1. "
        f"Brighter is more weight. Slot {common} ({slot_names[common]}) is the "
        f"largest for {int((top_slots == common).sum())} of them."
    )

    with st.expander("Heatmap as a table"):
        table = pd.DataFrame(
            matrix, columns=[f"slot {j}" for j in range(matrix.shape[1])]
        )
        table.insert(0, "movie", labels)
        st.dataframe(
            table,
            hide_index=True,
            column_config={column: NUMBER for column in table.columns[1:]},
        )


# Slot meanings -----------------------------------------------------------------


def rating_figure(stats: SlotStats) -> go.Figure:
    slots = stats.slots
    # Points, not bars: the axis starts near the ratings, not at zero.
    figure = go.Figure(
        go.Scatter(
            x=slots["slot"],
            y=slots["mean_rating"],
            mode="markers",
            error_y={"type": "data", "array": 2 * slots["rating_stderr"]},
            marker={"color": shared.OKABE_ITO[4], "size": 9},
            customdata=slots[["name", "pairs"]],
            hovertemplate="slot %{x}: %{customdata[0]}<br>mean rating %{y:.3f}"
            "<br>%{customdata[1]} pairs<extra></extra>",
            name="slot's pairs",
        )
    )
    add_reference_line(
        figure, stats.overall_mean_rating, f"all: {stats.overall_mean_rating:.3f}"
    )
    low = min(slots["mean_rating"].min(), stats.overall_mean_rating)
    high = max(slots["mean_rating"].max(), stats.overall_mean_rating)
    margin = max(0.05, (high - low) * 0.3)
    figure.update_xaxes(title_text="memory slot", dtick=1 if len(slots) <= 40 else None)
    figure.update_yaxes(title_text="mean rating", range=[low - margin, high + margin])
    figure.update_layout(height=320, margin={"t": 10, "b": 10, "r": 110})
    return figure


@st.cache_data(max_entries=8, show_spinner=False)
def show_slot_meanings(run_path: str, weights_mtime_ns: int) -> None:
    """Draw the per-slot overview of a run.

    The elements depend on the run alone, so Streamlit replays them from the
    cache on later runs instead of rebuilding the chart and the table.
    """
    stats = slot_stats(run_path, weights_mtime_ns)
    st.subheader("What each slot means")
    share = f"{stats.top_fraction:.0%}"
    memory_size = len(stats.slots)
    st.markdown(
        f"For every slot, the **{share} of the {stats.n_pairs:,} training pairs** "
        "with the most attention on it form its pair set. A slot is named by the "
        "genres over-represented in its set (lift = share in the set ÷ share among "
        "all pairs). LRML sees only which movies a user rated, never the rating, "
        "so a slot whose pairs rate above or below the overall mean has picked up "
        "the rating on its own."
    )
    peaked = stats.mean_max_weight * memory_size
    st.caption(
        f"On average a pair's largest weight is {stats.mean_max_weight:.3f}, "
        f"{peaked:.2f} times the uniform 1/{memory_size} = {1 / memory_size:.3f}. "
        "Near 1× the attention is almost uniform, and slot differences are small."
    )
    st.plotly_chart(rating_figure(stats), key="attention_slot_ratings")
    best = stats.slots.loc[stats.slots["rating_difference"].idxmax()]
    worst = stats.slots.loc[stats.slots["rating_difference"].idxmin()]
    st.caption(
        f"Mean explicit rating of each slot's pair set, with ±2 standard errors, "
        f"against the mean of all training pairs ({stats.overall_mean_rating:.3f}). "
        f"Highest: slot {best['slot']} ({best['mean_rating']:.3f}, "
        f"{best['rating_difference']:+.3f}). Lowest: slot {worst['slot']} "
        f"({worst['mean_rating']:.3f}, {worst['rating_difference']:+.3f})."
    )
    st.dataframe(
        stats.slots,
        hide_index=True,
        column_config={
            "top_genres": st.column_config.TextColumn(
                "top genres (lift)", help="Genres over-represented in the pair set."
            ),
            "mean_weight": NUMBER,
            "dominant_pairs": st.column_config.NumberColumn(
                help="Pairs whose largest weight is on this slot."
            ),
            "pairs": st.column_config.NumberColumn(help="Size of the pair set."),
            "mean_rating": st.column_config.NumberColumn(format="%.3f"),
            "rating_stderr": st.column_config.NumberColumn(format="%.3f"),
            "rating_difference": st.column_config.NumberColumn(
                "vs overall", format="%+.3f"
            ),
            "weighted_mean_rating": st.column_config.NumberColumn(
                format="%.3f", help="Over all pairs, weighted by the slot's attention."
            ),
            "rating_correlation": st.column_config.NumberColumn(
                format="%+.3f", help="Pearson r of the slot's weight and the rating."
            ),
        },
    )


@st.fragment
def show_slot_detail(stats: SlotStats) -> None:
    slot = st.selectbox(
        "Slot",
        list(range(len(stats.slots))),
        format_func=stats.label,
        key="attention_slot",
    )
    genres = stats.genres[
        (stats.genres["slot"] == slot) & (stats.genres["pairs"] >= stats.min_pairs)
    ]
    genre_column, movie_column, user_column = st.columns([2, 3, 3])
    with genre_column:
        st.markdown(f"**Genres** of slot {slot}'s pairs")
        figure = go.Figure(
            go.Bar(
                x=genres["lift"],
                y=genres["genre"],
                orientation="h",
                marker_color=shared.OKABE_ITO[0],
                customdata=genres[["share", "base_rate", "pairs"]],
                hovertemplate="%{y}: lift %{x:.2f}<br>%{customdata[0]:.1%} of the "
                "slot's pairs, %{customdata[1]:.1%} of all<br>%{customdata[2]} "
                "pairs<extra></extra>",
            )
        )
        add_reference_line(figure, 1.0, "", vertical=True)
        figure.update_yaxes(autorange="reversed")
        figure.update_xaxes(title_text="lift")
        figure.update_layout(height=60 + 20 * len(genres), margin={"t": 10, "b": 10})
        st.plotly_chart(figure, key="attention_slot_genres")
        st.caption(
            f"Lift of each genre with at least {stats.min_pairs} pairs in the set. "
            "Right of the dotted line at 1, the genre is over-represented."
        )
        st.dataframe(
            genres[["genre", "lift", "share", "base_rate", "pairs"]],
            hide_index=True,
            column_config={
                "lift": st.column_config.NumberColumn(format="%.2f"),
                "share": st.column_config.NumberColumn(format="percent"),
                "base_rate": st.column_config.NumberColumn(format="percent"),
            },
        )
    with movie_column:
        st.markdown("**Movies** with the most weight on it")
        movies = stats.movies[stats.movies["slot"] == slot]
        st.dataframe(
            movies[["rank", "title", "year", "genres", "mean_weight", "pairs"]],
            hide_index=True,
            column_config={"year": YEAR, "mean_weight": NUMBER},
        )
    with user_column:
        st.markdown("**Users** with the most weight on it")
        users = stats.users[stats.users["slot"] == slot]
        st.dataframe(
            users[["rank", "user_id", "age", "gender", "occupation", "mean_weight"]],
            hide_index=True,
            column_config={"mean_weight": NUMBER},
        )
    st.caption(
        "Mean weight on the slot over the movie's or user's training pairs, among "
        f"those with at least {stats.min_pairs} pairs."
    )


# What-if -----------------------------------------------------------------------


@st.fragment
def show_what_if(loaded: LoadedRun, user_index: int, stats: SlotStats) -> None:
    st.subheader("What if some slots were muted?")
    memory_size = len(stats.slots)
    mute_column, k_column = st.columns([3, 1])
    muted = mute_column.multiselect(
        "Mute slots",
        list(range(memory_size)),
        format_func=stats.label,
        key="attention_mute",
        placeholder="no slot muted",
        help="A muted slot gets weight 0 and the other slots' weights are rescaled "
        "to sum to 1 again.",
    )
    k = k_column.slider("K", 1, MAX_K, DEFAULT_K, key="attention_whatif_k")
    try:
        ranking = muted_ranking(loaded, user_index, set(muted), k)
    except ValueError as error:
        st.error(str(error))
        return

    after = ranking[ranking["rank_after"] <= k]
    dropped = ranking[ranking["rank_after"] > k]
    moved = int((after["move"] != 0).sum())
    st.dataframe(
        after[
            ["rank_after", "rank_before", "move", "title", "year", "genres"]
            + ["score_after", "score_before"]
        ],
        hide_index=True,
        column_config={
            "rank_after": st.column_config.NumberColumn("rank now"),
            "rank_before": st.column_config.NumberColumn("rank before"),
            "move": st.column_config.NumberColumn(
                format="%+d", help="Places gained (positive) or lost (negative)."
            ),
            "year": YEAR,
            "score_after": st.column_config.NumberColumn("score now", format="%.4f"),
            "score_before": st.column_config.NumberColumn(
                "score before", format="%.4f"
            ),
        },
    )
    muted_text = ", ".join(str(slot) for slot in sorted(muted)) or "none"
    summary = (
        f"Muted slots: {muted_text}. {moved} of the top {len(after)} changed rank, "
        f"and {len(dropped)} movies left the top {k}"
    )
    if len(dropped):
        summary += ": " + ", ".join(
            f"{title} (was {rank})"
            for title, rank in zip(dropped["title"], dropped["rank_before"])
        )
    st.caption(summary + ". Ranks are over every movie the user has not rated.")

    st.markdown("**Recommend with a single slot as the relation**")
    slot = st.selectbox(
        "Relation slot",
        list(range(memory_size)),
        format_func=stats.label,
        key="attention_single_slot",
        help="Score every movie with r = the slot's memory vector alone.",
    )
    single = single_slot_recommend(loaded, user_index, slot, k)
    st.dataframe(
        single[["rank", "rank_full", "title", "year", "genres", "score"]],
        hide_index=True,
        column_config={
            "rank_full": st.column_config.NumberColumn(
                "rank with full attention", help="Rank of the movie under the model."
            ),
            "year": YEAR,
            "score": NUMBER,
        },
    )
    overlap = int((single["rank_full"] <= k).sum())
    st.caption(
        f"Top {len(single)} when r is slot {slot}'s memory. {overlap} of them are "
        f"also in the model's top {k}."
    )


# Page --------------------------------------------------------------------------

st.title("Attention")
loaded = shared.require_loaded_run()
stats = slot_stats(str(loaded.run.path), shared.weights_mtime_ns(loaded.run))

user_column, movie_column = st.columns(2, vertical_alignment="bottom")
with user_column:
    user_id, user_index = shared.user_picker(loaded, "attention_user")
try:
    # One ranking serves the default movie and the heatmap's rows.
    top = recommend(loaded, user_index, min(MAX_HEATMAP_MOVIES, loaded.split.n_items))
except ValueError as error:
    st.error(str(error))
    st.stop()
with movie_column:
    item_id, item_index = shared.movie_picker(
        loaded, "attention_item", int(top["item_id"].iloc[0])
    )

attention = pair_attention(loaded.model, user_index, item_index)
st.caption(
    f"Run {loaded.run.name}: user {user_id} and "
    f"{shared.movie_label_of(loaded, item_id)}, "
    f"over {len(attention.weights)} memory slots of dimension {len(attention.joint)}."
)
show_summary(attention, stats)
show_weights(attention, stats)
show_steps(loaded, attention, stats)
st.divider()
show_what_if(loaded, user_index, stats)
st.divider()
show_heatmap(loaded, user_index, top, stats)
st.divider()
show_slot_meanings(str(loaded.run.path), shared.weights_mtime_ns(loaded.run))
show_slot_detail(stats)
