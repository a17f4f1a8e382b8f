"""Tests for lrml.cli: every subcommand, on a run trained once by ``python -m lrml``.

The run is trained in a real subprocess. The other commands call `main` in this
process because that is faster. A few error cases also run as subprocesses, to
check what a real process prints.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lrml.cli import main
from lrml.runs import REPO_ROOT, Run

SUBCOMMANDS = ["fetch", "train", "evaluate", "recommend", "attention", "runs"]
TRAIN_ARGS = ["--dataset", "ml-100k", "--epochs", "2", "--embedding-dim", "8"]
TRAIN_ARGS += ["--memory-size", "4"]
TEST_METRIC_NAMES = {"sampled_hr@10", "sampled_ndcg@10", "full_hr@10", "full_ndcg@10"}


def _run_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lrml", *args],
        check=False,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def trained_process(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """Train a two-epoch run with ``python -m lrml train --json``."""
    out = tmp_path_factory.mktemp("cli") / "run"
    result = _run_cli("train", *TRAIN_ARGS, "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    return out, result


@pytest.fixture
def trained(trained_process) -> tuple[Path, dict]:
    """Return the trained run's folder and its parsed JSON summary."""
    out, result = trained_process
    return out, json.loads(result.stdout)


@pytest.fixture
def run_dir(trained) -> str:
    return str(trained[0])


def _main_json(capsys, *args: str):
    assert main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("command", [[], *([name] for name in SUBCOMMANDS)], ids=str)
def test_help_exits_zero(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])

    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(
        f"usage: python -m lrml {' '.join(command)}".rstrip()
    )


def test_train_help_shows_ranges(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])

    output = " ".join(capsys.readouterr().out.split())  # undo argparse's wrapping
    assert "--embedding-dim D size of user and item vectors" in output
    assert "range 2 to 1024" in output


def test_module_help_in_subprocess():
    result = _run_cli("--help")

    assert result.returncode == 0
    assert "usage: python -m lrml" in result.stdout


def test_train_prints_one_json_line(trained_process):
    _, result = trained_process

    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert isinstance(json.loads(lines[0]), dict)


def test_train_json_fields(trained):
    out, summary = trained

    assert summary["run"] == str(out)
    assert summary["epochs"] == 2
    assert summary["train_seconds"] > 0
    assert 1 <= summary["best_epoch"] <= 2
    assert set(summary["test"]) == TEST_METRIC_NAMES
    assert all(0.0 <= value <= 1.0 for value in summary["test"].values())


def test_train_writes_run_folder(trained):
    run = Run(trained[0])

    assert run.status()["state"] == "finished"
    assert len(run.metrics()) == 2
    assert run.has_weights()
    assert run.config.embedding_dim == 8
    assert run.config.memory_size == 4


def test_train_json_matches_test_metrics(trained):
    out, summary = trained

    saved = Run(out).test_metrics()

    for name, value in summary["test"].items():
        assert saved[name] == value, name


def test_train_existing_out_rejected(capsys, trained):
    code = main(["train", *TRAIN_ARGS, "--out", str(trained[0])])

    captured = capsys.readouterr()
    assert code == 2
    assert _error_lines(captured.err)[0].endswith(str(trained[0]) + "'")
    assert "File exists" in captured.err


def test_recommend_json_records(capsys, run_dir, ml100k):
    records = _main_json(
        capsys, "recommend", run_dir, "--user", "1", "-k", "5", "--json"
    )

    assert len(records) == 5
    assert [record["rank"] for record in records] == [1, 2, 3, 4, 5]
    assert {record["user_id"] for record in records} == {1}
    assert {"item_id", "title", "year", "genres", "score"} <= set(records[0])


def test_recommend_raw_movie_ids(capsys, run_dir, ml100k):
    records = _main_json(
        capsys, "recommend", run_dir, "--user", "1", "-k", "5", "--json"
    )

    catalogue = dict(zip(ml100k.items["item_id"], ml100k.items["title"]))
    for record in records:
        assert catalogue[record["item_id"]] == record["title"]


def test_recommend_excludes_seen(capsys, run_dir, ml100k):
    records = _main_json(
        capsys, "recommend", run_dir, "--user", "1", "-k", "20", "--json"
    )

    interactions = ml100k.interactions
    seen = set(interactions.loc[interactions["user_id"] == 1, "item_id"])
    assert not seen & {record["item_id"] for record in records}


def test_recommend_scores_descending(capsys, run_dir):
    records = _main_json(
        capsys, "recommend", run_dir, "--user", "1", "-k", "20", "--json"
    )

    scores = [record["score"] for record in records]
    assert scores == sorted(scores, reverse=True)


def test_recommend_csv(capsys, run_dir):
    assert main(["recommend", run_dir, "--user", "1", "-k", "5", "--csv"]) == 0

    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(table.columns) == [
        "user_id",
        "rank",
        "item_id",
        "title",
        "year",
        "genres",
        "score",
    ]
    assert len(table) == 5


def test_recommend_text_table(capsys, run_dir):
    assert main(["recommend", run_dir, "--user", "1", "-k", "3"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["user_id", "rank", "item_id"]
    assert len(lines) == 4


def test_recommend_all_users(capsys, run_dir, ml100k):
    records = _main_json(
        capsys, "recommend", run_dir, "--all-users", "-k", "2", "--json"
    )

    assert len(records) == 2 * 943
    assert {record["user_id"] for record in records} == set(ml100k.users["user_id"])


def test_attention_json(capsys, run_dir):
    payload = _main_json(
        capsys, "attention", run_dir, "--user", "1", "--item", "50", "--json"
    )

    assert payload["user_id"] == 1
    assert payload["item_id"] == 50
    assert payload["title"].startswith("Star Wars")
    assert len(payload["weights"]) == 4
    assert sum(payload["weights"]) == pytest.approx(1.0, abs=1e-5)
    assert min(payload["weights"]) >= 0.0
    assert payload["distance"] >= 0.0


def test_attention_text(capsys, run_dir):
    assert main(["attention", run_dir, "--user", "1", "--item", "50"]) == 0

    output = capsys.readouterr().out
    assert output.startswith("user 1, movie 50 (Star Wars)")
    assert output.count("slot ") == 4


def test_evaluate_json(capsys, run_dir, trained):
    payload = _main_json(capsys, "evaluate", run_dir, "--json")

    assert payload["run"] == run_dir
    assert payload["users"] == 943
    for name, value in trained[1]["test"].items():
        # The run was trained in another process, whose thread count may
        # reorder float sums; allow one user's hit to flip.
        assert payload[name] == pytest.approx(value, abs=1.5 / 943), name


def test_evaluate_text(capsys, run_dir):
    assert main(["evaluate", run_dir]) == 0

    output = capsys.readouterr().out
    assert "sampled_hr@10: " in output
    assert "users: 943" in output


def test_runs_lists_run(capsys, monkeypatch, trained):
    monkeypatch.setenv("LRML_MODELS_DIR", str(trained[0].parent))

    assert main(["runs"]) == 0

    name, state, epoch, metric, kept = capsys.readouterr().out.strip().split("\t")
    assert name == "run"
    assert state == "finished"
    assert epoch == "epoch 2"
    assert metric.startswith("test sampled HR@10 0.")
    assert kept == "every rating"


def test_runs_empty(capsys, models_dir):
    assert main(["runs"]) == 0

    assert capsys.readouterr().out.strip() == f"no runs in {models_dir}"


def test_fetch_prints_folder(capsys, ml100k):
    assert main(["fetch", "ml-100k"]) == 0

    output = capsys.readouterr().out.strip()
    assert output.endswith("layout)")
    assert Path(output.split(" (")[0]).is_dir()


BAD_ARGUMENTS = [
    pytest.param(
        ["recommend", "{run}", "--user", "99999"],
        "unknown user id '99999'",
        id="recommend-unknown-user",
    ),
    pytest.param(
        ["recommend", "{run}", "--user", "1", "-k", "0"],
        "k must be an integer from 1 to 100; got 0",
        id="recommend-k-zero",
    ),
    pytest.param(
        ["recommend", "{run}", "--user", "1", "-k", "101"],
        "k must be an integer from 1 to 100",
        id="recommend-k-too-large",
    ),
    pytest.param(
        ["recommend", "missing-run", "--user", "1"],
        "no run 'missing-run' in",
        id="recommend-missing-run",
    ),
    pytest.param(
        ["attention", "{run}", "--user", "1", "--item", "99999"],
        "unknown movie id '99999'",
        id="attention-unknown-movie",
    ),
    pytest.param(
        ["attention", "{run}", "--user", "0", "--item", "50"],
        "unknown user id '0'",
        id="attention-unknown-user",
    ),
    pytest.param(
        ["train", "--epochs", "0"],
        r"epochs must be in \[1, 10000\]; got 0",
        id="train-epochs-zero",
    ),
    pytest.param(
        ["train", "--learning-rate", "-1"],
        r"learning_rate must be in \[1e-06, 1.0\]; got -1.0",
        id="train-negative-learning-rate",
    ),
    pytest.param(
        ["train", "--set", "nonsense"],
        "invalid --set 'nonsense'",
        id="train-set-without-value",
    ),
    pytest.param(
        ["train", "--set", "epochs=abc"],
        "invalid --set 'epochs=abc'",
        id="train-set-non-integer",
    ),
    pytest.param(
        ["train", "--set", "distance=cosine"],
        "distance must be one of l2, squared_l2",
        id="train-set-invalid-choice",
    ),
    pytest.param(
        ["train", "--out", "x/y", "--name", "z"],
        "give --out or --name, not both",
        id="train-out-and-name",
    ),
    pytest.param(
        ["evaluate", "missing-run"],
        "no run 'missing-run' in",
        id="evaluate-missing-run",
    ),
    pytest.param(
        ["evaluate", "../outside"],
        "invalid run name '../outside'",
        id="evaluate-unsafe-name",
    ),
]


@pytest.mark.parametrize(("argv", "message"), BAD_ARGUMENTS)
def test_bad_arguments_one_error_line(capsys, run_dir, argv, message):
    code = main([arg.format(run=run_dir) for arg in argv])

    captured = capsys.readouterr()
    errors = _error_lines(captured.err)
    assert code == 2
    assert len(errors) == 1
    assert re.search(message, errors[0])
    assert "Traceback" not in captured.err
    assert captured.out == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["recommend", "{run}", "--user", "99999", "--json"],
        ["train", "--epochs", "0"],
        ["evaluate", "missing-run"],
    ],
    ids=lambda value: value[0],
)
def test_bad_arguments_in_subprocess(run_dir, tmp_path, argv):
    result = _run_cli(
        *[arg.format(run=run_dir) for arg in argv],
        env={"LRML_MODELS_DIR": str(tmp_path)},
    )

    assert result.returncode == 2
    assert len(_error_lines(result.stderr)) == 1
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_unknown_device_one_error_line(capsys, models_dir):
    try:
        code = main(["train", *TRAIN_ARGS, "--device", "tpu"])
    except RuntimeError:
        code = None

    assert code == 2
    assert len(_error_lines(capsys.readouterr().err)) == 1
