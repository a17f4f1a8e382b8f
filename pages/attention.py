"""Attention: how LRML builds the relation vector of one (user, movie) pair."""

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from lrml.attention import PairAttention, attention_matrix, pair_attention
from lrml.inference import LoadedRun, recommend
from pages import shared

shared.ensure_navigation()

HEATMAP_ITEMS = 10


def weights_figure(attention: PairAttention) -> go.Figure:
    slots = attention.slots()
    figure = px.bar(
        slots, x="slot", y="weight", hover_data={"logit": ":.4f", "weight": ":.4f"}
    )
    figure.update_xaxes(title_text="memory slot", dtick=1 if len(slots) <= 40 else None)
    figure.update_yaxes(
        title_text="attention weight", range=[0, max(1e-9, slots["weight"].max()) * 1.1]
    )
    figure.update_layout(height=360, margin={"t": 10, "b": 10})
    return figure


def show_summary(attention: PairAttention) -> None:
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
    columns[4].metric("Top slot", f"{top_slot}", help=f"weight {weights[top_slot]:.4f}")


def show_weights(attention: PairAttention) -> None:
    chart_column, table_column = st.columns([3, 2])
    with chart_column:
        st.plotly_chart(weights_figure(attention), key="attention_chart")
        st.caption(
            f"The {len(attention.weights)} weights sum to {attention.weights.sum():.6f}."
        )
    with table_column:
        st.dataframe(
            attention.slots(),
            hide_index=True,
            height=360,
            column_config={
                "logit": st.column_config.NumberColumn(format="%.4f"),
                "weight": st.column_config.ProgressColumn(
                    format="%.4f", min_value=0.0, max_value=1.0
                ),
            },
        )


def show_steps(attention: PairAttention) -> None:
    with st.expander("Step by step: p ⊙ q, logits, softmax, r"):
        st.markdown(
            "1. **Joint embedding** `p ⊙ q`: the element-wise product of the user "
            "and movie vectors, one value per dimension (column `p ⊙ q` below).\n"
            "2. **Logits** `(p ⊙ q) Kᵀ`: one dot product with each memory key "
            "(column `logit` of the slot table above).\n"
            "3. **Attention** `a = softmax(logits)`: the weights, non-negative and "
            "summing to 1.\n"
            "4. **Relation** `r = a M`: the weighted sum of the memory vectors "
            "(column `r` below).\n"
            "5. **Score** `-||p + r - q||`: the user, moved by r, should land near "
            "the movie."
        )
        dimensions = pd.DataFrame(
            {
                "dimension": np.arange(len(attention.joint)),
                "p ⊙ q": attention.joint,
                "r": attention.relation,
            }
        )
        st.dataframe(
            dimensions,
            hide_index=True,
            column_config={
                "p ⊙ q": st.column_config.NumberColumn(format="%.5f"),
                "r": st.column_config.NumberColumn(format="%.5f"),
            },
        )
        st.latex(
            rf"\lVert p + r - q \rVert = {attention.distance:.4f}"
            rf"\qquad \lVert p - q \rVert = {attention.distance_without_relation:.4f}"
            rf"\qquad \lVert r \rVert = {np.linalg.norm(attention.relation):.4f}"
        )


def show_heatmap(loaded: LoadedRun, user_index: int, top: pd.DataFrame) -> None:
    with st.expander(f"Attention over this user's top {len(top)} unseen movies"):
        matrix = attention_matrix(
            loaded.model, user_index, top["item_index"].to_numpy(copy=True)
        )
        labels = [
            shared.movie_label(title, year)
            for title, year in zip(top["title"], top["year"])
        ]
        figure = px.imshow(
            matrix,
            y=labels,
            labels={"x": "memory slot", "y": "movie", "color": "weight"},
            aspect="auto",
            color_continuous_scale="Oranges",
        )
        figure.update_layout(height=80 + 28 * len(labels), margin={"t": 10, "b": 10})
        st.plotly_chart(figure, key="attention_heatmap")
        st.caption(
            "Each row is one movie's attention over the memory slots and sums to 1."
        )


st.title("Attention")
loaded = shared.require_loaded_run()

user_column, movie_column = st.columns(2, vertical_alignment="bottom")
with user_column:
    user_id, user_index = shared.user_picker(loaded, "attention_user")
top = recommend(loaded, user_index, HEATMAP_ITEMS)
with movie_column:
    item_id, item_index = shared.movie_picker(
        loaded, "attention_item", int(top["item_id"].iloc[0])
    )

attention = pair_attention(loaded.model, user_index, item_index)
st.caption(
    f"Run {loaded.run.name}: user {user_id} and {shared.movie_labels(loaded)[item_id]}, "
    f"over {len(attention.weights)} memory slots of dimension {len(attention.joint)}."
)
show_summary(attention)
show_weights(attention)
show_steps(attention)
show_heatmap(loaded, user_index, top)
