"""Choose LRML's default config on the MovieLens-100K validation split.

Usage: ``python bench/search.py [--out bench/search_trials.jsonl]``; add
``--summary-only`` to rewrite ``bench/SEARCH.md`` from the file without training.

The search is a plain staged grid, not a random or Bayesian search. Each stage
is a small grid around the best config of the stages before it:

1. ``coarse``: embedding_dim (32, 64, 100) x learning_rate (0.001, 0.003)
   x num_negatives (5, 10, 20);
2. ``loss``: margin (0.25, 0.5, 1.0) x negative_reduction (hardest, mean);
3. ``fine``: one field at a time (half the learning rate, l2_weight,
   init_scale, clip_radius, distance, memory_size, negative_relation);
4. ``seeds``: the three best distinct configs again with seeds 1 and 2; the
   config with the best mean validation HR@10 over seeds 0, 1 and 2 wins;
5. ``refit``: whether ``refit="on"`` helps, checked without the test pairs. An
   inner split drops every user's test pair and holds out the validation pair
   as its test pair. The winner trains on it with and without refit (seeds 0,
   1, 2), and both are scored on those held-out validation pairs.

Every trial trains with early stopping (patience 5, at most 50 epochs), one
torch thread and a fixed seed, and is ranked by validation HR@10 of its best
epoch. Each trial is appended to a JSONL file as it finishes (config, stage,
best epoch, validation HR@10 and nDCG@10, epochs, seconds), and a rerun skips
the trials already there, so an interrupted search resumes where it stopped.
The summary table goes to ``bench/SEARCH.md``. The test split is never read
here: ``bench/bench_models.py`` reports the chosen default's test figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from lrml.config import TrainConfig
from lrml.data import load_ml100k
from lrml.evaluation import ModelScorer, evaluate_sampled
from lrml.split import Split, leave_one_out
from lrml.training import fit, refit

# The starting point: the defaults before this search, with the search's
# training budget. Every trial is this config with a few fields changed.
BASE = TrainConfig(
    embedding_dim=32,
    memory_size=20,
    margin=0.5,
    learning_rate=1e-3,
    epochs=50,
    batch_size=1024,
    num_negatives=10,
    negative_reduction="hardest",
    negative_relation="own",
    distance="l2",
    clip_radius=1.0,
    l2_weight=0.0,
    init_scale=0.1,
    optimizer="adam",
    patience=5,
    refit="off",
    seed=0,
)
SEEDS = (0, 1, 2)
# The fields some stage changes, listed with BASE's values in the summary.
SEARCHED_FIELDS = (
    "embedding_dim",
    "learning_rate",
    "num_negatives",
    "margin",
    "negative_reduction",
    "l2_weight",
    "init_scale",
    "clip_radius",
    "distance",
    "memory_size",
    "negative_relation",
    "patience",
    "epochs",
)
TOP_FOR_SEEDS = 3

logger = logging.getLogger("search")


def coarse_grid(best: dict) -> list[dict]:
    return [
        {"embedding_dim": dim, "learning_rate": lr, "num_negatives": k}
        for dim in (32, 64, 100)
        for lr in (1e-3, 3e-3)
        for k in (5, 10, 20)
    ]


def loss_grid(best: dict) -> list[dict]:
    return [
        {**best, "margin": margin, "negative_reduction": reduction}
        for margin in (0.25, 0.5, 1.0)
        for reduction in ("hardest", "mean")
    ]


def fine_grid(best: dict) -> list[dict]:
    lr = best.get("learning_rate", BASE.learning_rate)
    changes = [
        {"learning_rate": lr / 2},
        {"l2_weight": 0.001},
        {"l2_weight": 0.01},
        {"init_scale": 0.03},
        {"init_scale": 0.3},
        {"clip_radius": 0.5},
        {"clip_radius": 2.0},
        {"distance": "squared_l2"},
        {"memory_size": 10},
        {"memory_size": 50},
        {"negative_relation": "shared"},
    ]
    return [{**best, **change} for change in changes]


STAGES = (("coarse", coarse_grid), ("loss", loss_grid), ("fine", fine_grid))


def normalise(changes: dict) -> dict:
    """Drop the changes that equal ``BASE``, so one config has one description."""
    return {
        name: value
        for name, value in sorted(changes.items())
        if getattr(BASE, name) != value
    }


def trial_key(stage: str, changes: dict) -> str:
    # A config that an earlier stage already trained is not trained again, so
    # the key names the protocol (selection or refit check), not the stage.
    protocol = "refit" if stage == "refit" else "selection"
    return json.dumps({"protocol": protocol, **normalise(changes)})


def load_trials(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    trials = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            record["changes"] = normalise(record["changes"])
            record["key"] = trial_key(record["stage"], record["changes"])
            trials[record["key"]] = record
    return trials


def run_selection(split: Split, changes: dict) -> dict:
    """Train one config with early stopping and return its validation figures."""
    config = BASE.replace(**changes)
    started = time.perf_counter()
    result = fit(config, split)
    return {
        "best_epoch": result.best_epoch,
        "epochs": len(result.history),
        "val_hr@10": result.best_validation["hr@10"],
        "val_ndcg@10": result.best_validation["ndcg@10"],
        "seconds": time.perf_counter() - started,
    }


def inner_split(interactions: pd.DataFrame, split: Split) -> Split:
    """Drop every test pair, so the validation pair becomes the held-out one."""
    test_pairs = pd.DataFrame(
        {
            "user_id": np.asarray(split.user_vocab.ids)[split.test_users],
            "item_id": np.asarray(split.item_vocab.ids)[split.test_items],
            "is_test": True,
        }
    )
    marked = interactions.merge(test_pairs, on=["user_id", "item_id"], how="left")
    kept = interactions[marked["is_test"].isna().to_numpy()]
    return leave_one_out(kept, split.user_vocab, split.item_vocab)


def run_refit_check(inner: Split, changes: dict) -> dict:
    """Score one config on the inner split's held-out pairs, without and with refit.

    The inner split's test pairs are the outer split's validation pairs, so
    neither arm trains on or is scored on the outer test pairs.
    """
    config = BASE.replace(**changes)
    started = time.perf_counter()
    result = fit(config, inner)
    selected, _ = evaluate_sampled(ModelScorer(result.model), inner, "test")
    selection_seconds = time.perf_counter() - started
    refitted = refit(config, inner, result.best_epoch)
    refit_metrics, _ = evaluate_sampled(ModelScorer(refitted), inner, "test")
    return {
        "best_epoch": result.best_epoch,
        "epochs": len(result.history),
        "off_hr@10": selected["hr@10"],
        "off_ndcg@10": selected["ndcg@10"],
        "on_hr@10": refit_metrics["hr@10"],
        "on_ndcg@10": refit_metrics["ndcg@10"],
        "seconds": time.perf_counter() - started,
        "selection_seconds": selection_seconds,
    }


class Search:
    """The trials run so far, with append-only storage in a JSONL file."""

    def __init__(self, path: Path, summary_only: bool = False) -> None:
        self.path = path
        self.summary_only = summary_only
        self.trials = load_trials(path)

    def run(self, stage: str, changes: dict, measure) -> dict:
        key = trial_key(stage, changes)
        if key in self.trials:
            return self.trials[key]
        if self.summary_only:
            raise SystemExit(
                f"trial {key} of stage {stage} is not in {self.path}; run without "
                "--summary-only to train it"
            )
        changes = normalise(changes)
        logger.info("trial %s: %s", stage, changes)
        record = {"key": key, "stage": stage, "changes": changes, **measure(changes)}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        self.trials[key] = record
        logger.info(
            "  best epoch %s, validation HR@10 %s, %.0f s",
            record.get("best_epoch"),
            record.get("val_hr@10", record.get("on_hr@10")),
            record["seconds"],
        )
        return record

    def selection_records(self) -> list[dict]:
        return [r for r in self.trials.values() if "val_hr@10" in r]


def without_seed(changes: dict) -> dict:
    return {name: value for name, value in normalise(changes).items() if name != "seed"}


def config_id(changes: dict) -> str:
    return json.dumps(dict(sorted(without_seed(changes).items())))


def best_distinct(records: list[dict], count: int) -> list[dict]:
    """Return the changes of the ``count`` best seed-0 configs, distinct configs."""
    seen, best = set(), []
    ranked = sorted(records, key=lambda r: r["val_hr@10"], reverse=True)
    for record in ranked:
        if record["changes"].get("seed", 0) != 0:
            continue
        identity = config_id(record["changes"])
        if identity not in seen:
            seen.add(identity)
            best.append(without_seed(record["changes"]))
        if len(best) == count:
            break
    return best


def seed_means(records: list[dict]) -> dict[str, dict[str, float]]:
    """Mean validation HR@10 and nDCG@10 per config over the seeds it ran with."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(config_id(record["changes"]), []).append(record)
    return {
        identity: {
            "hr": float(np.mean([r["val_hr@10"] for r in group])),
            "ndcg": float(np.mean([r["val_ndcg@10"] for r in group])),
            "seeds": len({r["changes"].get("seed", 0) for r in group}),
        }
        for identity, group in groups.items()
    }


def search(path: Path, summary_path: Path, summary_only: bool = False) -> dict:
    torch.set_num_threads(1)
    interactions = load_ml100k().interactions
    split = leave_one_out(interactions)
    trials = Search(path, summary_only)

    best: dict = {}
    done_stages: set[str] = set()
    for stage, grid in STAGES:
        for changes in grid(best):
            trials.run(stage, changes, lambda c: run_selection(split, c))
        # Only the stages run so far count, so that a resumed search, whose
        # file already contains later stages, rebuilds the same grids.
        done_stages.add(stage)
        records = [r for r in trials.selection_records() if r["stage"] in done_stages]
        best = best_distinct(records, 1)[0]
        logger.info("best after %s: %s", stage, best)

    finalists = best_distinct(trials.selection_records(), TOP_FOR_SEEDS)
    for changes in finalists:
        for seed in SEEDS[1:]:
            trials.run(
                "seeds", {**changes, "seed": seed}, lambda c: run_selection(split, c)
            )
    means = seed_means(
        [
            r
            for r in trials.selection_records()
            if without_seed(r["changes"]) in finalists
        ]
    )
    winner = max(finalists, key=lambda c: means[config_id(c)]["hr"])
    logger.info("chosen by mean validation HR@10 over seeds: %s", winner)

    inner = inner_split(interactions, split)
    refit_records = [
        trials.run(
            "refit", {**winner, "seed": seed}, lambda c: run_refit_check(inner, c)
        )
        for seed in SEEDS
    ]
    summary = render_summary(trials, finalists, means, winner, refit_records)
    summary_path.write_text(summary, encoding="utf-8")
    print(summary)
    return winner


def describe(changes: dict) -> str:
    shown = without_seed(changes)
    return ", ".join(f"{name}={value}" for name, value in sorted(shown.items())) or "-"


def describe_base() -> str:
    fields = BASE.to_dict()
    return ", ".join(f"{name}={fields[name]}" for name in SEARCHED_FIELDS)


def render_summary(
    trials: Search,
    finalists: list[dict],
    means: dict,
    winner: dict,
    refit_records: list[dict],
) -> str:
    records = trials.selection_records()
    total_seconds = sum(r["seconds"] for r in trials.trials.values())
    lines = [
        "# LRML config search on the MovieLens-100K validation split",
        "",
        (
            "Written by `bench/search.py`: a plain staged grid, one torch thread, "
            f"{len(trials.trials)} trials, {total_seconds / 60:.0f} minutes of "
            f"training. Every config starts from `{describe_base()}` and "
            "changes only the fields listed. HR@10 and nDCG@10 are sampled (100 "
            "unrated candidates) on the validation pairs at the best epoch. "
            "Seconds are wall time on a machine shared with other work, so they "
            "vary with its load."
        ),
        "",
        "## Every trial, best first",
        "",
        "| stage | changes | seed | best epoch | epochs | val HR@10 | val nDCG@10 | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(records, key=lambda r: r["val_hr@10"], reverse=True):
        lines.append(
            f"| {r['stage']} | {describe(r['changes'])} | "
            f"{r['changes'].get('seed', 0)} | {r['best_epoch']} | {r['epochs']} | "
            f"{r['val_hr@10']:.4f} | {r['val_ndcg@10']:.4f} | {r['seconds']:.0f} |"
        )
    lines += finalist_lines(finalists, means, winner)
    lines += refit_lines(refit_records)
    return "\n".join(lines)


def finalist_lines(finalists: list[dict], means: dict, winner: dict) -> list[str]:
    lines = [
        "",
        "## Finalists: mean over seeds 0, 1 and 2",
        "",
        "| changes | seeds | mean val HR@10 | mean val nDCG@10 |",
        "|---|---|---|---|",
    ]
    for changes in finalists:
        m = means[config_id(changes)]
        lines.append(
            f"| {describe(changes)} | {m['seeds']} | {m['hr']:.4f} | {m['ndcg']:.4f} |"
        )
    lines += [
        "",
        f"Chosen: `{describe(winner)}`.",
    ]
    return lines


def refit_lines(refit_records: list[dict]) -> list[str]:
    lines = [
        "",
        "## Refit check on the inner split",
        "",
        (
            "The inner split drops each user's test pair, so the validation pair "
            "is its held-out pair. `off` keeps the best epoch's weights. `on` "
            "retrains from scratch on training plus inner-validation pairs for "
            "that many epochs."
        ),
        "",
        "| seed | best epoch | off HR@10 | on HR@10 | off nDCG@10 | on nDCG@10 |",
        "|---|---|---|---|---|---|",
    ]
    for r in refit_records:
        lines.append(
            f"| {r['changes'].get('seed', 0)} | {r['best_epoch']} | "
            f"{r['off_hr@10']:.4f} | {r['on_hr@10']:.4f} | {r['off_ndcg@10']:.4f} | "
            f"{r['on_ndcg@10']:.4f} |"
        )
    off = np.mean([r["off_hr@10"] for r in refit_records])
    on = np.mean([r["on_hr@10"] for r in refit_records])
    off_ndcg = np.mean([r["off_ndcg@10"] for r in refit_records])
    on_ndcg = np.mean([r["on_ndcg@10"] for r in refit_records])
    lines += [
        f"| mean | | {off:.4f} | {on:.4f} | {off_ndcg:.4f} | {on_ndcg:.4f} |",
        "",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "bench" / "search_trials.jsonl",
        help="JSONL file of trials; existing trials are kept and skipped",
    )
    parser.add_argument(
        "--summary",
        type=Path,
        default=REPO_ROOT / "bench" / "SEARCH.md",
        help="Markdown summary written at the end",
    )
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="rewrite the summary from the JSONL file; fail if a trial is missing",
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("lrml").setLevel(logging.WARNING)
    winner = search(args.out, args.summary, args.summary_only)
    print(json.dumps({"chosen": winner}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
