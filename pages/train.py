"""Train: start runs from a form, follow the selected run live, and pick a run."""

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from lrml import jobs
from lrml.config import TrainConfig, config_fields
from lrml.data import DATASETS
from lrml.runs import (
    ACTIVE_STATES,
    Run,
    create_run,
    list_runs,
    models_dir,
    validate_run_name,
)
from pages import shared

shared.ensure_navigation()

PROGRESS_REFRESH_SECONDS = 1
FORM_COLUMNS = 3
FORM_ERROR_KEY = "train_form_error"
FORM_NOTICE_KEY = "train_form_notice"
RUN_NAME_KEY = "train_run_name"
# The shape of the names that lrml.runs.default_run_name builds.
DEFAULT_NAME_EXAMPLE = (
    f"{TrainConfig().dataset}-d{TrainConfig().embedding_dim}-n{TrainConfig().memory_size}"
    "-YYYYmmdd-HHMMSS"
)


def config_widget_key(name: str) -> str:
    return f"train_config_{name}"


# Progress of one run -----------------------------------------------------------


def progress_figure(metrics: pd.DataFrame, best_epoch: int | None) -> go.Figure:
    """Plot the training loss and validation HR@10 per epoch on two y axes."""
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_trace(
        go.Scatter(
            x=metrics["epoch"],
            y=metrics["loss"],
            name="training loss",
            mode="lines+markers",
        ),
        secondary_y=False,
    )
    if "val_hr@10" in metrics:
        figure.add_trace(
            go.Scatter(
                x=metrics["epoch"],
                y=metrics["val_hr@10"],
                name="validation HR@10",
                mode="lines+markers",
            ),
            secondary_y=True,
        )
    if best_epoch:
        figure.add_vline(x=best_epoch, line_dash="dot", annotation_text="best epoch")
    figure.update_xaxes(title_text="epoch", dtick=1 if len(metrics) <= 20 else None)
    figure.update_yaxes(title_text="loss", secondary_y=False)
    figure.update_yaxes(
        title_text="HR@10", tickformat=".3f", showgrid=False, secondary_y=True
    )
    figure.update_layout(
        height=340, margin={"t": 30, "b": 10}, legend={"orientation": "h"}
    )
    return figure


def draw_progress(run: Run, status: dict[str, Any]) -> None:
    metrics = pd.DataFrame(run.metrics())
    state = status.get("state", "unknown")
    last = metrics.iloc[-1] if len(metrics) else None

    columns = st.columns(5)
    columns[0].metric("State", state)
    columns[1].metric("Epoch", f"{status.get('epoch', 0)} / {run.config.epochs}")
    columns[2].metric("Last loss", "–" if last is None else f"{last['loss']:.4f}")
    hr = None if last is None else last.get("val_hr@10")
    columns[3].metric("Validation HR@10", "–" if hr is None else f"{hr:.4f}")
    columns[4].metric("Best epoch", status.get("best_epoch") or "–")
    if status.get("message"):
        st.caption(f"Status message: {status['message']}")

    stop_clicked = state in ACTIVE_STATES and st.button(
        "Stop training", key="train_stop", icon=":material/stop_circle:"
    )
    if stop_clicked:
        run.request_stop()
        st.toast(
            f"Requested run {run.name} to stop. It keeps its best epoch's weights."
        )

    if metrics.empty:
        st.caption("No epoch has finished yet.")
        return
    st.plotly_chart(progress_figure(metrics, status.get("best_epoch")))


@st.fragment(run_every=PROGRESS_REFRESH_SECONDS)
def draw_live_progress(run_path: str) -> None:
    """Redraw an active run's progress every second, and rerun the page once it ends."""
    run = Run(Path(run_path))
    status = run.status()
    draw_progress(run, status)
    if status.get("state") not in ACTIVE_STATES:
        # A full rerun stops this polling and refreshes the runs table.
        st.rerun()


def show_progress(run: Run | None) -> None:
    if run is None:
        st.info("No runs yet. Start one with the form below.")
        return
    st.header(f"Run {run.name}")
    status = run.status()
    if status.get("state") in ACTIVE_STATES:
        draw_live_progress(str(run.path))
    else:
        draw_progress(run, status)


# Table of runs -----------------------------------------------------------------


def summarize_run(run: Run) -> dict[str, Any]:
    status = run.status()
    metrics = run.metrics()
    test = run.test_metrics() or {}
    hit_rates = [m["val_hr@10"] for m in metrics if m.get("val_hr@10") is not None]
    return {
        "name": run.name,
        "state": status.get("state"),
        "epochs done": len(metrics),
        "best val HR@10": max(hit_rates) if hit_rates else None,
        "test sampled HR@10": test.get("sampled_hr@10"),
        "created": pd.to_datetime(status.get("created_at")),
    }


def _select_table_row(table_key: str, names: list[str]) -> None:
    rows = st.session_state[table_key].selection.rows
    if rows:
        shared.set_selection("run", names[rows[0]])


def show_runs_table(runs: list[Run], selected: Run | None) -> None:
    st.header("All runs")
    if not runs:
        st.caption(f"No runs in {models_dir()}.")
        return
    table = pd.DataFrame([summarize_run(run) for run in runs])
    names = table["name"].tolist()
    selected_row = (
        names.index(selected.name) if selected and selected.name in names else 0
    )
    # The key contains the selected run, so that a selection made elsewhere (the
    # sidebar, a new run) gives a fresh widget that starts from selection_default.
    table_key = f"train_runs_table_{names[selected_row]}"
    st.dataframe(
        table,
        key=table_key,
        hide_index=True,
        placeholder="–",
        on_select=functools.partial(_select_table_row, table_key, names),
        selection_mode="single-row-required",
        selection_default={"selection": {"rows": [selected_row]}},
        column_config={
            "best val HR@10": st.column_config.NumberColumn(format="%.4f"),
            "test sampled HR@10": st.column_config.NumberColumn(format="%.4f"),
            "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
        },
    )
    st.caption(
        "Click a row to use that run on every page, as the sidebar selector does. "
        f"Runs are folders in `{models_dir()}`."
    )


# New run form ------------------------------------------------------------------


def float_step(default: float) -> float:
    """Return a step one tenth of the default's order of magnitude."""
    if default <= 0:
        return 0.001
    return 10 ** math.floor(math.log10(default)) / 10


def config_widget(field: dataclasses.Field) -> None:
    """Draw the input for one TrainConfig field from its metadata."""
    meta = field.metadata
    key = config_widget_key(field.name)
    help_text = meta.get("help")
    if "choices" in meta:
        choices = list(meta["choices"])
        st.selectbox(
            field.name,
            choices,
            index=choices.index(field.default),
            key=key,
            help=help_text,
        )
    elif "low" in meta and isinstance(field.default, int):
        st.number_input(
            field.name,
            min_value=int(meta["low"]),
            max_value=int(meta["high"]),
            value=field.default,
            step=1,
            key=key,
            help=f"{help_text}, from {meta['low']} to {meta['high']}",
        )
    elif "low" in meta:
        st.number_input(
            field.name,
            min_value=float(meta["low"]),
            max_value=float(meta["high"]),
            value=float(field.default),
            step=float_step(field.default),
            format="%g",
            key=key,
            help=f"{help_text}, from {meta['low']:g} to {meta['high']:g}",
        )
    elif field.name == "dataset":
        # TrainConfig accepts any non-empty string here, but lrml.data loads only these.
        st.selectbox(field.name, list(DATASETS), key=key, help=help_text)
    else:
        st.text_input(field.name, value=field.default, key=key, help=help_text)


def _submit_new_run() -> None:
    """Form callback: validate the form, create the run and start its training process."""
    values = {
        f.name: st.session_state[config_widget_key(f.name)] for f in config_fields()
    }
    name = st.session_state[RUN_NAME_KEY].strip() or None
    try:
        config = TrainConfig.from_dict(values)
        if name is not None:
            validate_run_name(name)
        run = create_run(config, name=name)
    except FileExistsError:
        st.session_state[FORM_ERROR_KEY] = (
            f"A run named {name!r} already exists in {models_dir()}. Choose another name."
        )
        return
    except ValueError as error:
        st.session_state[FORM_ERROR_KEY] = f"Invalid settings: {error}"
        return

    try:
        pid = jobs.start_training(run)
    except OSError as error:
        st.session_state[FORM_ERROR_KEY] = (
            f"Created run {run.name!r} but could not start its training process: {error}"
        )
        return
    shared.set_selection("run", run.name)
    st.session_state[FORM_NOTICE_KEY] = f"Started run {run.name} as process {pid}."


def show_new_run_form() -> None:
    st.header("New run")
    with st.form("train_new_run"):
        st.text_input(
            "Run name (optional)",
            key=RUN_NAME_KEY,
            placeholder=DEFAULT_NAME_EXAMPLE,
            help="1 to 64 letters, digits, '.', '-' or '_', starting with a letter or "
            "digit. Left empty, the name is built from the dataset, embedding_dim, "
            "memory_size and the time.",
        )
        columns = st.columns(FORM_COLUMNS)
        for position, field in enumerate(config_fields()):
            with columns[position % FORM_COLUMNS]:
                config_widget(field)
        st.form_submit_button(
            "Start training",
            key="train_submit",
            type="primary",
            icon=":material/play_arrow:",
            on_click=_submit_new_run,
        )

    if FORM_ERROR_KEY in st.session_state:
        st.error(st.session_state.pop(FORM_ERROR_KEY))
    if FORM_NOTICE_KEY in st.session_state:
        notice = st.session_state.pop(FORM_NOTICE_KEY)
        st.success(notice)
        # The form sits at the bottom of the page, below the progress it started.
        st.toast(notice, icon=":material/play_arrow:")


st.title("Train")
runs = list_runs()
selected = shared.current_run()
show_progress(selected)
show_runs_table(runs, selected)
show_new_run_form()
