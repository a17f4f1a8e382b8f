"""Train: queue runs, follow and compare them live, and stop, resume or delete them."""

import dataclasses
import functools
import math
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from lrml import jobs
from lrml.config import TrainConfig, config_fields
from lrml.data import DATASETS, dataset_label, local_datasets
from lrml.run_data import run_dataset
from lrml.runs import (
    ACTIVE_STATES,
    FINAL_STATES,
    LIVE_STATES,
    LOG_FILE,
    UNKNOWN_STATE,
    Run,
    create_run,
    list_runs,
    models_dir,
    validate_run_name,
)
from pages import shared

shared.ensure_navigation()

# The live view polls the run folders this often while a run is queued or
# training, and less often otherwise, to notice runs started from a terminal.
LIVE_REFRESH_SECONDS = 1
IDLE_REFRESH_SECONDS = 5
LOG_TAIL_LINES = 30
LOG_TAIL_BYTES = 64 * 1024
DEFAULT_EXTRA_EPOCHS = 10
FORM_COLUMNS = 3
# Curves of up to this many epochs get a tick at every epoch.
MAX_EPOCHS_TICKED = 15

# Per-epoch record keys of Run.metrics() that the live view plots.
CURVES = {
    "loss": "training loss",
    "val_hr@10": "validation HR@10",
    "val_ndcg@10": "validation nDCG@10",
}
TABLE_HYPERPARAMETERS = (
    "embedding_dim",
    "memory_size",
    "margin",
    "learning_rate",
    "batch_size",
    "num_negatives",
    "min_rating",
    "k_core",
)

# States in which no process owns a run, so that it can be resumed or deleted.
IDLE_STATES = (*FINAL_STATES, UNKNOWN_STATE)
PROBLEM_STATES = ("failed", "interrupted", UNKNOWN_STATE)

ERROR_KEY = "train_error"
NOTICE_KEY = "train_notice"
RUN_NAME_KEY = "train_run_name"
COMPARE_KEY = "train_compare"
RESUME_EPOCHS_KEY = "train_resume_epochs"
FEEDBACK_KEY = "train_feedback"
EVERY_RATING, THRESHOLD = "Every rating counts", "Ratings at or above a threshold"
DEFAULT_MIN_RATING = 4.0
# Fields drawn above the form, so that a change reruns the page and updates the
# filtered statistics at once.
DATA_FIELDS = ("dataset", "min_rating", "k_core")
# Session state that the Data page writes: its dataset and filter.
DATA_PAGE_DATASET_KEY = "data_selected_dataset"
DATA_PAGE_MIN_RATING_KEY = "data_selected_min_rating"
DATA_PAGE_K_CORE_KEY = "data_selected_k_core"


def config_widget_key(name: str) -> str:
    return f"train_config_{name}"


def delete_confirm_key(run_name: str) -> str:
    return f"train_delete_confirm_{run_name}"


def report_error(message: str) -> None:
    st.session_state[ERROR_KEY] = message


def report_notice(message: str) -> None:
    st.session_state[NOTICE_KEY] = message


# Reading run folders -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunSnapshot:
    """One read of a run folder, so that a page run reads each file once."""

    run: Run
    status: dict[str, Any]
    metrics: pd.DataFrame
    config: TrainConfig | None

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def state(self) -> str:
        return self.status.get("state", UNKNOWN_STATE)


def read_snapshot(run: Run) -> RunSnapshot:
    try:
        config = run.config
    except (OSError, ValueError):
        config = None
    return RunSnapshot(run, run.status(), pd.DataFrame(run.metrics()), config)


def read_snapshots() -> list[RunSnapshot]:
    """Read every run folder, newest first."""
    return [read_snapshot(run) for run in list_runs()]


def states_signature(snapshots: list[RunSnapshot]) -> tuple[tuple[str, str], ...]:
    return tuple((snapshot.name, snapshot.state) for snapshot in snapshots)


def queued_names() -> list[str]:
    """Return the names of the queued runs, next to start first."""
    return [run.name for run in jobs.queued_runs()]


def parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def run_duration(status: dict[str, Any]) -> float | None:
    """Return the seconds since the latest start: until now while the run is
    live, else until its last status update."""
    started = parse_time(status.get("started_at"))
    if started is None or status.get("state") == "queued":
        return None
    live = status.get("state") in LIVE_STATES
    ended = datetime.now(UTC) if live else parse_time(status.get("updated_at"))
    return None if ended is None else max(0.0, (ended - started).total_seconds())


def format_duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def read_log_tail(run: Run, lines: int = LOG_TAIL_LINES) -> str | None:
    """Return the last ``lines`` lines of the run's train.log, or None without one."""
    path = run.path / LOG_FILE
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
            text = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None
    return "\n".join(text.splitlines()[-lines:])


def best_value(metrics: pd.DataFrame, column: str) -> float | None:
    if column not in metrics or metrics[column].isna().all():
        return None
    return float(metrics[column].max())


# Actions on the selected run -------------------------------------------------------


def _stop_run(run_path: str) -> None:
    run = Run(Path(run_path))
    jobs.stop(run)
    report_notice(f"Run {run.name}: {run.status().get('message', 'stop requested')}.")


def _submit_run(run_path: str) -> None:
    run = Run(Path(run_path))
    try:
        jobs.submit(run)
    except (ValueError, OSError) as error:
        report_error(f"Could not queue run {run.name}: {error}.")
        return
    report_notice(f"Run {run.name} is {run.status().get('state')}.")


def _resume_run(run_path: str) -> None:
    run = Run(Path(run_path))
    extra_epochs = st.session_state[RESUME_EPOCHS_KEY]
    try:
        jobs.resume(run, extra_epochs)
    except (ValueError, OSError) as error:
        report_error(f"Could not resume run {run.name}: {error}.")
        return
    report_notice(
        f"Queued run {run.name} for {extra_epochs} more epochs, up to epoch "
        f"{run.config.epochs}."
    )


def _delete_run(run_path: str) -> None:
    run = Run(Path(run_path))
    if not st.session_state.get(delete_confirm_key(run.name)):
        report_error(f"Tick 'Confirm deletion' first to delete run {run.name}.")
        return
    try:
        jobs.delete(run)
    except (ValueError, OSError) as error:
        report_error(f"Could not delete run {run.name}: {error}.")
        return
    st.session_state.pop(delete_confirm_key(run.name), None)
    # The sidebar selects the newest run with weights when no run is selected.
    st.session_state.pop("run", None)
    st.query_params.pop("run", None)
    report_notice(f"Deleted run {run.name} and its folder.")


def _copy_settings_to_form(run_path: str) -> None:
    run = Run(Path(run_path))
    copy_data_settings(run.config)
    for field in config_fields():
        if field.name in DATA_FIELDS:
            continue
        value = getattr(run.config, field.name)
        is_float = "low" in field.metadata and not isinstance(field.default, int)
        st.session_state[config_widget_key(field.name)] = (
            float(value) if is_float else value
        )
    st.session_state[RUN_NAME_KEY] = ""
    report_notice(
        f"Copied the settings of run {run.name} into the form below. Change what "
        "you need, then start the new run."
    )


def show_state(
    snapshot: RunSnapshot, snapshots: list[RunSnapshot], queue: list[str]
) -> None:
    """Explain the selected run's state, with the fix for a failed or interrupted one."""
    state, message = snapshot.state, snapshot.status.get("message") or ""
    name = snapshot.name
    if state == "failed":
        st.error(f"Run **{name}** failed: {message}", icon=":material/error:")
    elif state == "interrupted":
        epoch = snapshot.run.checkpoint_epoch()
        fix = (
            f"It can be resumed from epoch {epoch}: set the extra epochs and click "
            "Resume."
            if epoch is not None
            else "It has no checkpoint, so copy its settings into a new run."
        )
        st.warning(
            f"Run **{name}** was interrupted. {fix}\n\nStatus message: {message}."
        )
    elif state == "queued" and name in queue:
        st.info(
            f"Run **{name}** is queued at position {queue.index(name) + 1} of "
            f"{len(queue)}. {slots_sentence(snapshots)}",
            icon=":material/schedule:",
        )
    elif state == "queued":
        # create_run leaves a run in this state until its creator submits it.
        st.info(
            f"Run **{name}** was created but not submitted to the queue yet. "
            "Click Queue to submit it.",
            icon=":material/schedule:",
        )
    elif state == UNKNOWN_STATE:
        st.warning(f"Run **{name}** has no readable status: {message}.")

    if snapshot.config is None:
        st.error(
            f"The config.json of run **{name}** is missing or invalid, so it cannot "
            "be resumed or copied. Delete it."
        )


def slots_sentence(snapshots: list[RunSnapshot]) -> str:
    live = sum(1 for s in snapshots if s.state in LIVE_STATES)
    try:
        slots = jobs.max_concurrent_runs()
    except ValueError as error:
        return f"No run can start: {error}."
    return f"{live} of {slots} training slots are in use."


def show_actions(snapshot: RunSnapshot, queue: list[str]) -> None:
    """Draw the buttons that apply to the run's state, left to right in one row."""
    run_path = str(snapshot.run.path)
    state = snapshot.state
    row = st.container(horizontal=True, vertical_alignment="bottom", gap="medium")

    if state in ACTIVE_STATES:
        row.button(
            "Stop",
            key="train_stop",
            icon=":material/stop_circle:",
            on_click=_stop_run,
            args=(run_path,),
            help="A queued run leaves the queue. A training run stops after its "
            "current batch and keeps its best epoch's weights.",
            disabled=state == "stopping",
        )

    if state == "queued" and snapshot.name not in queue:
        row.button(
            "Queue",
            key="train_queue",
            icon=":material/queue:",
            on_click=_submit_run,
            args=(run_path,),
            help="Submit the run to the queue. It starts when a training slot is free.",
        )

    if state in IDLE_STATES and snapshot.config is not None:
        checkpoint_epoch = snapshot.run.checkpoint_epoch()
        row.number_input(
            "Extra epochs",
            value=DEFAULT_EXTRA_EPOCHS,
            step=1,
            key=RESUME_EPOCHS_KEY,
            width=150,
            help="Epochs to train beyond the last checkpoint, from 1 to 10000.",
        )
        row.button(
            "Resume",
            key="train_resume",
            icon=":material/resume:",
            on_click=_resume_run,
            args=(run_path,),
            disabled=checkpoint_epoch is None,
            help="Queue the run again. It continues from the checkpoint of "
            f"epoch {checkpoint_epoch}, optimizer state included."
            if checkpoint_epoch is not None
            else "This run has no checkpoint: no epoch finished.",
        )

    if snapshot.config is not None:
        row.button(
            "Copy settings",
            key="train_copy_settings",
            icon=":material/content_copy:",
            on_click=_copy_settings_to_form,
            args=(run_path,),
            help="Fill the New run form below with this run's settings.",
        )

    if state not in ACTIVE_STATES:
        confirmed = row.checkbox(
            "Confirm deletion", key=delete_confirm_key(snapshot.name)
        )
        row.button(
            "Delete",
            key="train_delete",
            icon=":material/delete:",
            on_click=_delete_run,
            args=(run_path,),
            disabled=not confirmed,
            help=f"Delete the folder {snapshot.run.path} with its weights, "
            "metrics and log.",
        )


def show_log(snapshot: RunSnapshot) -> None:
    tail = read_log_tail(snapshot.run)
    if tail is None:
        return
    with st.expander(
        f"Last {LOG_TAIL_LINES} lines of {LOG_FILE}",
        expanded=snapshot.state in ("failed", "interrupted"),
    ):
        st.code(tail or "(empty)", language="text")


def show_settings(snapshot: RunSnapshot) -> None:
    """Show every field of the run's config.json, None as "none"."""
    if snapshot.config is None:
        return
    values = snapshot.config.to_dict()
    with st.expander("Settings"):
        st.dataframe(
            pd.DataFrame(
                {
                    "field": list(values),
                    "value": [
                        "none" if value is None else str(value)
                        for value in values.values()
                    ],
                }
            ),
            hide_index=True,
            key="train_settings",
        )


def show_selected_run(snapshot: RunSnapshot, snapshots: list[RunSnapshot]) -> None:
    st.header(f"Run {snapshot.name}")
    queue = queued_names()
    show_state(snapshot, snapshots, queue)
    show_actions(snapshot, queue)
    show_log(snapshot)
    show_settings(snapshot)


# Live view ---------------------------------------------------------------------


def choose_compared_runs(selected: str, snapshots: list[RunSnapshot]) -> list[str]:
    """Draw the multiselect of runs to overlay and return the chosen names.

    The choice starts from the selected run plus every run that is training,
    and starts again from there when that set changes, because the widget key
    contains it. The page never writes the widget's value itself: the browser
    can overwrite a value set by the server with the stale one that it sends
    along with the next timed fragment rerun.
    """
    default = [selected] + [
        s.name for s in snapshots if s.state in LIVE_STATES and s.name != selected
    ]
    return st.multiselect(
        "Runs to compare",
        [s.name for s in snapshots],
        default=default,
        key=f"{COMPARE_KEY}_{'|'.join(default)}",
        help="Overlay these runs' curves. By default, the selected run and every "
        "run that is training.",
    )


def curve_figure(
    column: str, snapshots: list[RunSnapshot], colors: dict[str, str]
) -> go.Figure:
    """Plot one per-epoch metric, one line per run."""
    last_epoch = max(
        (s.metrics["epoch"].max() for s in snapshots if len(s.metrics)), default=1
    )
    figure = go.Figure()
    for snapshot in snapshots:
        metrics = snapshot.metrics
        if column not in metrics:
            continue
        figure.add_trace(
            go.Scatter(
                x=metrics["epoch"],
                y=metrics[column],
                name=snapshot.name,
                mode="lines+markers",
                line={"color": colors[snapshot.name]},
                marker={"size": 5},
            )
        )
    figure.update_layout(
        title={"text": CURVES[column], "font": {"size": 15}},
        height=300,
        margin={"t": 40, "b": 10, "l": 10, "r": 10},
        legend={"orientation": "h", "y": -0.25},
        showlegend=len(snapshots) > 1,
        # Whole epochs only: without dtick, plotly puts ticks at 0.5 for few epochs.
        xaxis={
            "title": "epoch",
            "dtick": 1 if last_epoch <= MAX_EPOCHS_TICKED else None,
        },
        yaxis={"tickformat": ".4f" if column == "loss" else ".3f"},
    )
    return figure


def show_curves(compared: list[RunSnapshot]) -> None:
    if not any(len(s.metrics) for s in compared):
        st.caption("No epoch of the compared runs has finished yet.")
        return
    palette = shared.OKABE_ITO
    colors = {s.name: palette[i % len(palette)] for i, s in enumerate(compared)}
    for column, chart_column in zip(CURVES, st.columns(len(CURVES))):
        chart_column.plotly_chart(
            curve_figure(column, compared, colors), key=f"train_curve_{column}"
        )


def show_progress_metrics(snapshot: RunSnapshot) -> None:
    metrics, status = snapshot.metrics, snapshot.status
    last = metrics.iloc[-1] if len(metrics) else {}
    total = snapshot.config.epochs if snapshot.config else "?"

    def latest(column: str, digits: int) -> str:
        value = last.get(column) if len(metrics) else None
        return "–" if value is None or pd.isna(value) else f"{value:.{digits}f}"

    # The first column fits the longest state, "interrupted", at the default font.
    columns = st.columns([2, 1.2, 1.2, 1.4, 1.6, 1])
    columns[0].metric("State", snapshot.state)
    columns[1].metric("Epoch", f"{status.get('epoch', len(metrics))} / {total}")
    columns[2].metric("Last loss", latest("loss", 4))
    columns[3].metric("Validation HR@10", latest("val_hr@10", 4))
    columns[4].metric("Validation nDCG@10", latest("val_ndcg@10", 4))
    columns[5].metric("Best epoch", status.get("best_epoch") or "–")
    # show_state already shows the message of a failed or interrupted run.
    if status.get("message") and snapshot.state not in PROBLEM_STATES:
        st.caption(f"Status message: {status['message']}")


def show_queue(snapshots: list[RunSnapshot]) -> None:
    by_name = {s.name: s for s in snapshots}
    queue = [by_name[name] for name in queued_names() if name in by_name]
    st.subheader("Queue")
    if not queue:
        st.caption(f"No run is waiting. {slots_sentence(snapshots)}")
        return
    st.dataframe(
        pd.DataFrame(
            {
                "position": range(1, len(queue) + 1),
                "name": [s.name for s in queue],
                "queued at (UTC)": [
                    parse_time(s.status.get("queued_at")) for s in queue
                ],
                "epochs": [s.config.epochs if s.config else None for s in queue],
            }
        ),
        hide_index=True,
        column_config={
            "queued at (UTC)": st.column_config.DatetimeColumn(
                format="YYYY-MM-DD HH:mm:ss"
            )
        },
    )
    st.caption(f"Queued runs start in this order. {slots_sentence(snapshots)}")


def summarize_run(snapshot: RunSnapshot) -> dict[str, Any]:
    status, config = snapshot.status, snapshot.config
    test = snapshot.run.test_metrics() or {}
    total = config.epochs if config else "?"
    row: dict[str, Any] = {
        "name": snapshot.name,
        "state": snapshot.state,
        "epochs": f"{len(snapshot.metrics)} / {total}",
    }
    for name in TABLE_HYPERPARAMETERS:
        row[name] = getattr(config, name) if config else None
    row["best val HR@10"] = best_value(snapshot.metrics, "val_hr@10")
    row["test sampled HR@10"] = test.get("sampled_hr@10")
    row["started (UTC)"] = parse_time(status.get("started_at"))
    row["duration"] = format_duration(run_duration(status))
    return row


def _select_table_row(table_key: str, names: list[str], drawn_for: str) -> None:
    """Table callback: select the clicked run, if the click is a real change.

    With each timed fragment rerun, the browser sends the selection of every
    table it still has, including tables drawn before the selection or the
    list of runs changed. Only the table drawn for the current selection may
    change it, or two tables would keep switching the selection between them.
    """
    state = st.session_state.get(table_key)
    rows = state.selection.rows if state is not None else []
    current = st.session_state.get("run") == drawn_for
    if not rows or not current or rows[0] >= len(names):
        return

    if names[rows[0]] != drawn_for:
        shared.set_selection("run", names[rows[0]])


def show_runs_table(snapshots: list[RunSnapshot], selected: str) -> None:
    st.subheader("All runs")
    table = pd.DataFrame([summarize_run(snapshot) for snapshot in snapshots])
    names = table["name"].tolist()
    selected_row = names.index(selected) if selected in names else 0
    drawn_for = names[selected_row]

    # The key contains the selected run and the list of runs, so that a new
    # selection or a new run gives a fresh widget that starts from
    # selection_default, with row numbers that match ``names``.
    names_digest = zlib.crc32("\n".join(names).encode())
    table_key = f"train_runs_table_{drawn_for}_{names_digest:08x}"
    st.dataframe(
        table,
        key=table_key,
        hide_index=True,
        placeholder="–",
        on_select=functools.partial(_select_table_row, table_key, names, drawn_for),
        selection_mode="single-row-required",
        selection_default={"selection": {"rows": [selected_row]}},
        column_config={
            "learning_rate": st.column_config.NumberColumn(format="%g"),
            "best val HR@10": st.column_config.NumberColumn(format="%.4f"),
            "test sampled HR@10": st.column_config.NumberColumn(format="%.4f"),
            "started (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
        },
    )

    st.caption(
        "Click a row to use that run on every page, as the sidebar selector does. "
        f"Runs are folders in `{models_dir()}`. The duration counts from the "
        "latest start, so a resumed run counts from its resumption."
    )


def show_live_view(selected: str, signature: tuple[tuple[str, str], ...]) -> None:
    """Draw the parts of the page that change while runs train.

    Streamlit reruns this fragment alone, every LIVE_REFRESH_SECONDS while a
    run is queued or training and every IDLE_REFRESH_SECONDS otherwise. When a
    run changes state, or the table selects another run, the fragment reruns
    the whole page so that the state messages and buttons above it match.
    """
    snapshots = read_snapshots()
    if (
        states_signature(snapshots) != signature
        or st.session_state.get("run") != selected
    ):
        st.rerun()

    by_name = {s.name: s for s in snapshots}
    show_progress_metrics(by_name[selected])
    compared = choose_compared_runs(selected, snapshots)
    show_curves([by_name[name] for name in compared if name in by_name])
    show_queue(snapshots)
    show_runs_table(snapshots, selected)


# New run form ------------------------------------------------------------------


def float_step(default: float) -> float:
    """Return a step one tenth of the default's order of magnitude."""
    if default <= 0:
        return 0.001
    return 10 ** math.floor(math.log10(default)) / 10


def range_help(field: dataclasses.Field) -> str:
    meta = field.metadata
    low, high = meta["low"], meta["high"]
    return f"{meta.get('help')}, from {low:g} to {high:g}"


def config_widget(field: dataclasses.Field) -> None:
    """Draw the input for one TrainConfig field from its metadata.

    The number inputs have no bounds on purpose: Streamlit would silently put an
    out-of-range value back to the default, whereas TrainConfig rejects it with
    a message that names the field, its range and the value.
    """
    meta = field.metadata
    key = config_widget_key(field.name)
    default = field.default
    if "choices" in meta:
        choices = list(meta["choices"])
        st.selectbox(
            field.name,
            choices,
            index=choices.index(default),
            key=key,
            help=meta["help"],
        )
    elif "low" in meta and isinstance(default, int):
        st.number_input(
            field.name, value=default, step=1, key=key, help=range_help(field)
        )
    elif "low" in meta:
        st.number_input(
            field.name,
            value=float(default),
            step=float_step(default),
            format="%g",
            key=key,
            help=range_help(field),
        )
    else:
        st.text_input(field.name, value=default, key=key, help=meta["help"])


def _submit_new_run() -> None:
    """Form callback: validate the form, create the run, queue it and select it."""
    values = {
        f.name: st.session_state[config_widget_key(f.name)]
        for f in config_fields()
        if f.name not in DATA_FIELDS
    }
    values.update(chosen_data_values())
    name = st.session_state[RUN_NAME_KEY].strip() or None
    try:
        config = TrainConfig.from_dict(values)
        if name is not None:
            validate_run_name(name)
        if is_local(config.dataset):
            # Raises DataError, a ValueError, when the filter leaves too little.
            filtered_counts(config.dataset, config.min_rating, config.k_core)
        run = create_run(config, name=name)
    except FileExistsError:
        report_error(
            f"A run named {name!r} already exists in {models_dir()}. Choose another name."
        )
        return
    except ValueError as error:
        reason = str(error).rstrip(".")
        report_error(f"Invalid settings: {reason}. Nothing was created.")
        return

    shared.set_selection("run", run.name)
    try:
        jobs.start_training(run)
    except (OSError, ValueError) as error:
        report_error(
            f"Created run {run.name!r} but could not queue or start it: {error}. "
            "Delete it, or resume it once the cause is fixed."
        )
        return
    status = run.status()
    if status.get("state") == "queued":
        report_notice(f"Queued run {run.name}. It starts when a training slot is free.")
    else:
        report_notice(f"Started run {run.name} as process {status.get('pid')}.")


def show_new_run_form() -> None:
    st.header("New run")
    dataset = show_data_controls()
    with st.form("train_new_run"):
        st.text_input(
            "Run name (optional)",
            key=RUN_NAME_KEY,
            placeholder=default_name_example(dataset),
            help="1 to 64 letters, digits, '.', '-' or '_', starting with a letter or "
            "digit. Left empty, the name is built from the dataset, embedding_dim, "
            "memory_size and the time.",
        )
        columns = st.columns(FORM_COLUMNS)
        form_fields = [f for f in config_fields() if f.name not in DATA_FIELDS]
        for position, field in enumerate(form_fields):
            with columns[position % FORM_COLUMNS]:
                config_widget(field)
        st.form_submit_button(
            "Start training",
            key="train_submit",
            type="primary",
            icon=":material/play_arrow:",
            on_click=_submit_new_run,
        )
    st.caption(
        "A new run waits in the queue until a training slot is free, then trains "
        "in its own process. This page does not wait for it."
    )


# Training data -------------------------------------------------------------------


def default_name_example(dataset: str) -> str:
    """Return the shape of the name that lrml.runs.default_run_name builds."""
    defaults = TrainConfig()
    return (
        f"{dataset_label(dataset)[:24]}-d{defaults.embedding_dim}-"
        f"n{defaults.memory_size}-YYYYmmdd-HHMMSS"
    )


def dataset_choices() -> list[str]:
    """Return the MovieLens releases, then the datasets already on this machine.

    The Data page's dataset and the dataset copied from a run are added when
    they are neither, such as a file given by its path.
    """
    choices = list(DATASETS)
    extra = [
        *local_datasets(),
        st.session_state.get(DATA_PAGE_DATASET_KEY),
        st.session_state.get(config_widget_key("dataset")),
    ]
    for name in extra:
        if name and name not in choices:
            choices.append(name)
    return choices


def format_dataset(name: str, local: list[str]) -> str:
    if name in DATASETS:
        return name if name in local else f"{name} (downloaded when a run starts)"
    return f"{Path(name).name} ({Path(name).parent})"


def is_local(name: str) -> bool:
    """Return whether ``name`` loads without a download: a path or a fetched release."""
    return name not in DATASETS or name in local_datasets()


@st.cache_data(max_entries=32, show_spinner="Filtering…")
def filtered_counts(
    name: str, min_rating: float | None, k_core: int | None
) -> dict[str, tuple[int, int]]:
    """Return (before, after) counts of users, items and interactions.

    Raises
    ------
    ValueError
        If the config is invalid or the filter leaves too little (`DataError`).
    """
    config = TrainConfig(dataset=name, min_rating=min_rating, k_core=k_core)
    dataset = shared.cached_dataset(name)
    kept = run_dataset(config, dataset).interactions
    before = dataset.interactions
    return {
        label: (before[column].nunique(), kept[column].nunique())
        for label, column in (("Users", "user_id"), ("Items", "item_id"))
    } | {"Interactions": (len(before), len(kept))}


def chosen_data_values() -> dict[str, Any]:
    """Return dataset, min_rating and k_core as the controls above the form set them."""
    state = st.session_state
    threshold = state.get(FEEDBACK_KEY) == THRESHOLD
    min_rating = state.get(config_widget_key("min_rating")) if threshold else None
    k_core = state.get(config_widget_key("k_core"), 1)
    return {
        "dataset": state[config_widget_key("dataset")],
        "min_rating": min_rating,
        # A 1-core keeps everything, so it is stored as no filter.
        "k_core": None if k_core == 1 else k_core,
    }


def copy_data_settings(config: TrainConfig) -> None:
    """Set the controls above the form to a config's dataset and filter."""
    state = st.session_state
    state[config_widget_key("dataset")] = config.dataset
    state[FEEDBACK_KEY] = EVERY_RATING if config.min_rating is None else THRESHOLD
    if config.min_rating is not None:
        state[config_widget_key("min_rating")] = float(config.min_rating)
    state[config_widget_key("k_core")] = config.k_core or 1


def set_data_defaults(choices: list[str]) -> None:
    """Start the controls from the Data page's choices, else from the defaults.

    Each default is set only while its control has no state, so it never
    overrides what the person chose on this page.
    """
    state = st.session_state
    data_page_dataset = state.get(DATA_PAGE_DATASET_KEY)
    data_page_min_rating = state.get(DATA_PAGE_MIN_RATING_KEY)
    if data_page_dataset not in choices:
        data_page_dataset = None
    state.setdefault(
        config_widget_key("dataset"), data_page_dataset or TrainConfig().dataset
    )
    state.setdefault(
        FEEDBACK_KEY, EVERY_RATING if data_page_min_rating is None else THRESHOLD
    )
    state.setdefault(
        config_widget_key("min_rating"),
        float(data_page_min_rating or DEFAULT_MIN_RATING),
    )
    state.setdefault(config_widget_key("k_core"), state.get(DATA_PAGE_K_CORE_KEY) or 1)


def show_data_controls() -> str:
    """Draw the dataset and filter controls with the filtered counts; return the dataset."""
    fields = {f.name: f for f in config_fields()}
    choices = dataset_choices()
    set_data_defaults(choices)

    left, middle, right = st.columns(3)
    dataset = left.selectbox(
        "dataset",
        choices,
        format_func=functools.partial(format_dataset, local=local_datasets()),
        key=config_widget_key("dataset"),
        help="A MovieLens release, or a dataset fetched or uploaded on the Data page.",
    )

    feedback = middle.radio(
        "Implicit feedback",
        [EVERY_RATING, THRESHOLD],
        key=FEEDBACK_KEY,
        help="LRML learns from positives only. By default every rating counts as "
        "one, whatever its value.",
    )
    min_rating = None
    if feedback == THRESHOLD:
        min_rating = middle.number_input(
            "min_rating",
            step=0.5,
            format="%g",
            key=config_widget_key("min_rating"),
            help=range_help(fields["min_rating"]),
        )

    k_core = right.number_input(
        "k_core",
        step=1,
        key=config_widget_key("k_core"),
        help=range_help(fields["k_core"]) + "; 1 keeps everything",
    )

    show_filtered_counts(dataset, min_rating, None if k_core == 1 else int(k_core))
    return dataset


def show_filtered_counts(
    dataset: str, min_rating: float | None, k_core: int | None
) -> None:
    if not is_local(dataset):
        st.caption(
            f"{dataset} is not on this machine yet, so its statistics are unknown. "
            "Fetch it on the Data page to see them."
        )
        return
    try:
        counts = filtered_counts(dataset, min_rating, k_core)
    except ValueError as error:
        st.error(f"{error}", icon=":material/filter_alt_off:")
        return
    for column, (label, (before, after)) in zip(st.columns(3), counts.items()):
        change = after - before
        column.metric(
            f"{label} kept",
            f"{after:,}",
            delta=None if change == 0 else f"{change:,}",
            help=f"Before filtering: {before:,}",
        )


def show_messages() -> None:
    """Show the outcome of the last button or form callback."""
    if ERROR_KEY in st.session_state:
        st.error(st.session_state.pop(ERROR_KEY))
    if NOTICE_KEY in st.session_state:
        notice = st.session_state.pop(NOTICE_KEY)
        st.success(notice)
        st.toast(notice)


st.title("Train")
show_messages()
snapshots = read_snapshots()
selected_run = shared.current_run()
if selected_run is None:
    st.info("No runs yet. Start one with the form below.")
else:
    by_name = {snapshot.name: snapshot for snapshot in snapshots}
    if selected_run.name not in by_name:
        # The run was created after read_snapshots listed the folder.
        by_name[selected_run.name] = read_snapshot(selected_run)
    show_selected_run(by_name[selected_run.name], snapshots)
    polling = any(s.state in ACTIVE_STATES for s in snapshots)
    live_view = st.fragment(
        show_live_view,
        run_every=LIVE_REFRESH_SECONDS if polling else IDLE_REFRESH_SECONDS,
    )
    live_view(selected_run.name, states_signature(snapshots))
show_new_run_form()
