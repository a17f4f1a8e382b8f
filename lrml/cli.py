"""Command line: ``python -m lrml COMMAND``.

Commands: fetch, train, evaluate, recommend, attention, runs, resume and stop.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lrml.config import TrainConfig, config_fields, is_int_field

logger = logging.getLogger("lrml.cli")

# Fields the train command takes as flags; the rest keep their defaults unless
# set with --set NAME=VALUE.
TRAIN_FLAGS = {
    "epochs": "N",
    "embedding_dim": "D",
    "memory_size": "N",
    "margin": "M",
    "learning_rate": "LR",
    "batch_size": "B",
    "num_negatives": "K",
    "seed": "S",
}
# Optional fields: without the flag, the field is None.
FILTER_FLAGS = {"min_rating": "R", "k_core": "K"}


class CommandError(Exception):
    """A user error: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lrml",
        description="Train, evaluate and explain LRML recommenders on MovieLens.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug messages"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # lrml.releases imports nothing heavy, unlike lrml.data (pyarrow, pandas).
    from lrml.releases import RELEASES

    fetch = commands.add_parser(
        "fetch",
        help="download a MovieLens release and print the folder with its files",
    )
    fetch.add_argument("dataset", choices=list(RELEASES), help="release name")

    train = commands.add_parser("train", help="train a run in this process")
    train.add_argument(
        "--dataset", default="ml-100k", help="dataset name (default ml-100k)"
    )
    fields = {f.name: f for f in config_fields()}
    for name, metavar in {**TRAIN_FLAGS, **FILTER_FLAGS}.items():
        f = fields[name]
        train.add_argument(
            "--" + name.replace("_", "-"),
            type=int if is_int_field(f) else float,
            default=None,
            metavar=metavar,
            help=f"{f.metadata['help']} (default {f.default}, range "
            f"{f.metadata['low']:g} to {f.metadata['high']:g})",
        )
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set any other config field, for example --set negative_reduction=mean",
    )
    train.add_argument(
        "--out", type=Path, help="run folder to create (default: models/NAME)"
    )
    train.add_argument("--name", help="run name inside the models folder")
    train.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    train.add_argument(
        "--json", action="store_true", help="print one JSON object at the end"
    )

    evaluate = commands.add_parser("evaluate", help="evaluate a run on the test split")
    evaluate.add_argument("run", help="run name or folder")
    evaluate.add_argument("--json", action="store_true", help="print JSON")

    recommend = commands.add_parser("recommend", help="top-K movies for users")
    recommend.add_argument("run", help="run name or folder")
    who = recommend.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="MovieLens user id")
    who.add_argument("--all-users", action="store_true", help="every user")
    recommend.add_argument(
        "-k", type=int, default=10, help="list length, 1 to 100 (default 10)"
    )
    recommend.add_argument(
        "--include-seen", action="store_true", help="keep movies the user already rated"
    )
    output = recommend.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON records")
    output.add_argument("--csv", action="store_true", help="print CSV")

    attention = commands.add_parser("attention", help="memory attention of one pair")
    attention.add_argument("run", help="run name or folder")
    attention.add_argument("--user", required=True, help="MovieLens user id")
    attention.add_argument("--item", required=True, help="MovieLens movie id")
    attention.add_argument("--json", action="store_true", help="print JSON")

    commands.add_parser(
        "runs", help="list the runs in the models folder, with queue positions"
    )
    _add_run_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handler = {
        "fetch": cmd_fetch,
        "train": cmd_train,
        "evaluate": cmd_evaluate,
        "recommend": cmd_recommend,
        "attention": cmd_attention,
        "runs": cmd_runs,
        "resume": cmd_resume,
        "stop": cmd_stop,
    }[args.command]
    try:
        handler(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (CommandError, ValueError, KeyError, FileNotFoundError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


def cmd_fetch(args: argparse.Namespace) -> None:
    from lrml.data import fetch_dataset

    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr)

    def show(received: int, total: int | None) -> None:
        if bar is not None:
            bar.total = total
            bar.update(received - bar.n)

    try:
        fetched = fetch_dataset(args.dataset, progress=show)
    finally:
        if bar is not None:
            bar.close()
    print(f"{fetched.folder} ({fetched.layout} layout)")


def cmd_train(args: argparse.Namespace) -> None:
    values: dict[str, Any] = {"dataset": args.dataset}
    for name in (*TRAIN_FLAGS, *FILTER_FLAGS):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    values.update(_parse_settings(args.set))
    config = TrainConfig().replace(**values)

    # Imported once the hyperparameters are valid, so that a typo fails before
    # the seconds that loading torch takes.
    from lrml.jobs import train_in_foreground
    from lrml.runs import create_run
    from lrml.training import choose_device

    device = choose_device(args.device)
    _limit_threads()

    if args.out is not None and args.name is not None:
        raise CommandError("give --out or --name, not both")
    if config.min_rating is not None or config.k_core is not None:
        from lrml.run_data import run_dataset

        # Fails before a run folder exists when the filter leaves too little.
        run_dataset(config)
    if args.out is not None:
        run = create_run(config, name=args.out.name, root=args.out.parent)
    else:
        run = create_run(config, name=args.name)
    logger.info("training run %s in %s on %s", run.name, run.path, device)

    _train_with_progress(
        run, args, lambda on_epoch: train_in_foreground(run, device, on_epoch)
    )


def _limit_threads() -> None:
    """Use $LRML_TORCH_THREADS torch threads, 1 by default, like the app's runs.

    On a busy machine, more threads than free cores make each epoch several
    times slower.
    """
    import torch

    from lrml.jobs import torch_threads

    torch.set_num_threads(torch_threads())


def _train_with_progress(
    run, args: argparse.Namespace, train, epochs: int | None = None
) -> None:
    """Call ``train(on_epoch)`` with a progress display, then print a summary.

    ``epochs`` is the epoch the run trains up to, by default its config's. The
    log lines also go to the run's train.log, as for runs that the app trains
    in the background; the runner appends a traceback there if training fails.
    """
    from lrml.runs import LOG_FILE

    file_handler = logging.FileHandler(run.path / LOG_FILE, encoding="utf-8")
    file_handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.addHandler(file_handler)
    progress = _EpochProgress(
        epochs or run.config.epochs,
        done=run.checkpoint_epoch() or 0,
        enabled=sys.stderr.isatty() and not args.json,
    )
    started = time.perf_counter()
    try:
        metrics = train(progress.update)
    finally:
        progress.close()
        root.removeHandler(file_handler)
        file_handler.close()
    seconds = time.perf_counter() - started

    summary = {
        "run": str(run.path),
        "epochs": len(run.metrics()),
        "best_epoch": run.status().get("best_epoch"),
        "train_seconds": round(seconds, 2),
        "test": _pick_test_metrics(metrics or {}),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"run folder: {run.path}")
        print(
            f"epochs: {summary['epochs']} (best {summary['best_epoch']}), {seconds:.1f} s"
        )
        for name, value in summary["test"].items():
            print(f"test {name}: {value:.4f}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from lrml.evaluation import ModelScorer, evaluate
    from lrml.inference import load_run

    loaded = load_run(args.run)
    evaluation = evaluate(ModelScorer(loaded.model), loaded.split, "test")
    if args.json:
        print(json.dumps({"run": str(loaded.run.path), **evaluation.summary}))
        return
    for name, value in evaluation.summary.items():
        print(f"{name}: {value:.4f}" if name != "users" else f"users: {int(value)}")


def cmd_recommend(args: argparse.Namespace) -> None:
    from lrml.inference import check_k, load_run, recommend

    loaded = load_run(args.run)
    check_k(args.k, loaded.split.n_items)
    if args.all_users:
        user_indices = np.arange(loaded.split.n_users)
    else:
        user_indices = np.array([_user_index(loaded, args.user)])

    frames = []
    for index in user_indices:
        frame = recommend(
            loaded, int(index), args.k, exclude_seen=not args.include_seen
        )
        frame.insert(0, "user_id", loaded.split.user_vocab.external(index))
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    columns = ["user_id", "rank", "item_id", "title", "year", "genres", "score"]
    _print_table(table[columns], args)


def cmd_attention(args: argparse.Namespace) -> None:
    from lrml.attention import pair_attention
    from lrml.inference import load_run

    loaded = load_run(args.run)
    user_index = _user_index(loaded, args.user)
    item_index = _item_index(loaded, args.item)
    result = pair_attention(loaded.model, user_index, item_index)
    title = loaded.items.iloc[item_index]["title"]
    if args.json:
        payload = {
            "user_id": loaded.split.user_vocab.external(user_index),
            "item_id": loaded.split.item_vocab.external(item_index),
            "title": title,
            "weights": result.weights.tolist(),
            "distance": result.distance,
            "distance_without_relation": result.distance_without_relation,
        }
        print(json.dumps(payload))
        return
    print(f"user {args.user}, movie {args.item} ({title})")
    print(
        f"distance with relation {result.distance:.4f}, "
        f"without {result.distance_without_relation:.4f}"
    )
    for slot, weight in enumerate(result.weights):
        print(f"slot {slot:3d}  {weight:.4f}  {'#' * round(weight * 50)}")


def cmd_runs(args: argparse.Namespace) -> None:
    from lrml.jobs import queued_runs
    from lrml.run_data import filter_description
    from lrml.runs import list_runs, models_dir

    runs = list_runs()
    if not runs:
        print(f"no runs in {models_dir()}")
        return
    queue = [run.name for run in queued_runs()]
    for run in runs:
        status = run.status()
        state = status.get("state")
        if run.name in queue:
            state = f"queued ({queue.index(run.name) + 1} of {len(queue)})"
        test = run.test_metrics() or {}
        hr = test.get("sampled_hr@10")
        shown = f"{hr:.4f}" if hr is not None else "-"
        print(
            f"{run.name}\t{state}\tepoch {status.get('epoch', 0)}\t"
            f"test sampled HR@10 {shown}\t{filter_description(run.config)}"
        )


def cmd_resume(args: argparse.Namespace) -> None:
    from lrml import jobs
    from lrml.runs import open_run
    from lrml.training import choose_device

    run = open_run(args.run)
    if args.background:
        jobs.resume(run, args.epochs)
        status = run.status()
        print(f"{run.name}: {status['state']} ({status.get('message', '')})")
        return

    device = choose_device(args.device)
    _limit_threads()
    done = run.checkpoint_epoch() or 0
    logger.info("resuming run %s after epoch %d on %s", run.name, done, device)
    _train_with_progress(
        run,
        args,
        lambda on_epoch: jobs.resume_in_foreground(run, args.epochs, device, on_epoch),
        epochs=done + args.epochs,
    )


def cmd_stop(args: argparse.Namespace) -> None:
    from lrml import jobs
    from lrml.runs import open_run

    run = open_run(args.run)
    jobs.stop(run)
    status = run.status()
    print(f"{run.name}: {status['state']} ({status.get('message', '')})")


def _add_run_commands(commands) -> None:
    """Add the ``resume`` and ``stop`` subcommands."""
    resume = commands.add_parser(
        "resume",
        help="train a stopped, interrupted, failed or finished run for more epochs",
    )
    resume.add_argument("run", help="run name or folder")
    resume.add_argument(
        "--epochs",
        type=int,
        required=True,
        metavar="N",
        help="epochs to train beyond the run's last checkpoint",
    )
    resume.add_argument(
        "--background",
        action="store_true",
        help="queue the run for a background training process, as the app does, "
        "instead of training in this process",
    )
    resume.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    resume.add_argument(
        "--json", action="store_true", help="print one JSON object at the end"
    )

    stop = commands.add_parser(
        "stop",
        help="stop a run: a queued one at once, a training one after its batch",
    )
    stop.add_argument("run", help="run name or folder")


def _user_index(loaded, user_id: str) -> int:
    index = loaded.split.user_vocab.find(user_id)
    if index is None:
        raise CommandError(
            f"unknown user id {user_id!r}: {_data_name(loaded)} has user ids "
            f"{loaded.split.user_vocab.external(0)} to "
            f"{loaded.split.user_vocab.external(loaded.split.n_users - 1)}"
        )
    return index


def _item_index(loaded, item_id: str) -> int:
    index = loaded.split.item_vocab.find(item_id)
    if index is None:
        raise CommandError(
            f"unknown movie id {item_id!r}: it is not in {_data_name(loaded)} "
            "or has no ratings"
        )
    return index


def _data_name(loaded) -> str:
    """Name the run's dataset, with its filter when it has one."""
    from lrml.run_data import filter_description

    config = loaded.config
    if config.min_rating is None and config.k_core in (None, 1):
        return config.dataset
    return f"{config.dataset} ({filter_description(config)})"


def _parse_settings(settings: list[str]) -> dict[str, Any]:
    fields = {f.name: f for f in config_fields()}
    values: dict[str, Any] = {}
    for setting in settings:
        name, sep, raw = setting.partition("=")
        if not sep or name not in fields:
            raise CommandError(
                f"invalid --set {setting!r}: use NAME=VALUE with NAME one of "
                f"{', '.join(fields)}"
            )
        kind = fields[name].type
        optional = fields[name].metadata.get("optional", False)
        if optional:
            kind = str(kind).removesuffix(" | None")
        if optional and raw.lower() == "none":
            values[name] = None
            continue
        try:
            values[name] = (
                int(raw)
                if kind in ("int", int)
                else (float(raw) if kind in ("float", float) else raw)
            )
        except ValueError:
            expected = {"int": "an integer", "float": "a number"}.get(
                str(kind), f"a {kind}"
            )
            none = " or none" if optional else ""
            raise CommandError(
                f"invalid --set {setting!r}: {name} takes {expected}{none}"
            ) from None
    return values


def _pick_test_metrics(metrics: dict[str, float]) -> dict[str, float]:
    names = ("sampled_hr@10", "sampled_ndcg@10", "full_hr@10", "full_ndcg@10")
    return {name: metrics[name] for name in names if name in metrics}


def _print_table(table: pd.DataFrame, args: argparse.Namespace) -> None:
    if args.json:
        print(table.to_json(orient="records"))
    elif args.csv:
        sys.stdout.write(table.to_csv(index=False))
    else:
        print(table.to_string(index=False))


class _EpochProgress:
    """Show training progress: a tqdm bar with the live loss on a terminal.

    Elsewhere (a pipe, a file, ``--json``) nothing is drawn, and the log lines
    that `lrml.training` writes for each epoch report progress on stderr. On a
    terminal those lines print above the bar instead of breaking it. Call
    `close` when training ends.
    """

    def __init__(self, epochs: int, done: int, enabled: bool) -> None:
        self.bar = None
        self._redirect = None
        if enabled:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._redirect = logging_redirect_tqdm()
            self._redirect.__enter__()
            self.bar = tqdm(
                total=epochs,
                initial=done,
                unit="epoch",
                desc="training",
                file=sys.stderr,
                dynamic_ncols=True,
            )

    def update(self, result, trainer) -> None:
        if self.bar is not None:
            self.bar.set_postfix(
                loss=f"{result.loss:.4f}",
                val_hr10=f"{result.validation['hr@10']:.3f}",
                refresh=False,
            )
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
