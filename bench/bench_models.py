"""Benchmark LRML against baselines on MovieLens-100K, and LRML at MovieLens-20M scale.

Usage: ``python bench/bench_models.py [--skip-scale] [--out bench/RESULTS.md]``.

Every model is trained and evaluated in its own child process, so each one's
peak memory (max RSS) is its own. All models share the split and the sampled
candidates (fixed seed), and a Wilcoxon signed-rank test on per-user sampled
nDCG@10 compares LRML with each baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

MODELS = ("lrml", "cml", "bpr", "als", "popularity")
KS = (5, 10, 20)


def train_and_evaluate(name: str, threads: int) -> dict:
    """Train one model on MovieLens-100K and return its figures (child process)."""
    import torch

    from lrml.baselines import PopularityScorer, fit_als, fit_bpr, make_cml
    from lrml.config import TrainConfig
    from lrml.data import load_ml100k
    from lrml.evaluation import ModelScorer, evaluate
    from lrml.split import leave_one_out
    from lrml.training import Trainer, fit, make_optimizer

    torch.set_num_threads(threads)
    split = leave_one_out(load_ml100k().interactions)
    started = time.perf_counter()
    epochs, best_epoch = 0, 0
    if name in ("lrml", "cml"):
        config = TrainConfig()
        trainer = Trainer(config, split)
        if name == "cml":
            trainer.model = make_cml(config, split, torch.Generator().manual_seed(0))
            trainer.optimizer = make_optimizer(trainer.model, config)
        result = fit(config, split, trainer=trainer)
        scorer = ModelScorer(result.model)
        epochs, best_epoch = len(result.history), result.best_epoch
    elif name == "bpr":
        fitted = fit_bpr(split)
        scorer, epochs, best_epoch = fitted.scorer, fitted.epochs, fitted.best_epoch
    elif name == "als":
        fitted = fit_als(split)
        scorer, epochs, best_epoch = fitted.scorer, fitted.epochs, fitted.best_epoch
    else:
        scorer = PopularityScorer(split)
    seconds = time.perf_counter() - started

    evaluation = evaluate(scorer, split, "test", ks=KS)
    ranks = evaluation.per_user["sampled_rank"].to_numpy()
    return {
        "model": name,
        "train_seconds": seconds,
        "epochs": epochs,
        "best_epoch": best_epoch,
        "seconds_per_epoch": seconds / epochs if epochs else None,
        "metrics": evaluation.summary,
        "sampled_ndcg10_per_user": np.where(ranks < 10, 1 / np.log2(ranks + 2), 0).tolist(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure_scale(threads: int) -> dict:
    """Time one LRML epoch and top-10 scoring on synthetic MovieLens-20M-shaped data."""
    import torch

    from lrml.config import TrainConfig
    from lrml.split import leave_one_out
    from lrml.synthetic import powerlaw_interactions
    from lrml.training import Trainer

    torch.set_num_threads(threads)
    started = time.perf_counter()
    interactions = powerlaw_interactions(138_000, 27_000, 20_000_000, seed=0)
    split = leave_one_out(interactions)
    prepare_seconds = time.perf_counter() - started

    config = TrainConfig(embedding_dim=64, memory_size=20, batch_size=1024, num_negatives=1)
    trainer = Trainer(config, split)
    started = time.perf_counter()
    trainer.train_epoch()
    epoch_seconds = time.perf_counter() - started

    model = trainer.model.eval()
    latencies = []
    for user in range(25):
        started = time.perf_counter()
        with torch.inference_mode():
            scores = model.score_all(torch.tensor([user]))
            torch.topk(scores, 10)
        latencies.append(time.perf_counter() - started)
    return {
        "prepare_seconds": prepare_seconds,
        "epoch_seconds": epoch_seconds,
        "top10_ms_median": 1000 * float(np.median(latencies)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_child(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    completed = subprocess.run(
        [sys.executable, __file__, *args],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def paired_p_value(lrml: list[float], other: list[float]) -> float:
    from scipy.stats import wilcoxon

    if np.allclose(lrml, other):
        return 1.0
    return float(wilcoxon(lrml, other).pvalue)


def render(results: list[dict], scale: dict | None, threads: int) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `bench/bench_models.py` on {time.strftime('%Y-%m-%d')}: "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch threads {threads}. MovieLens-100K, leave-one-out by timestamp; "
        "sampled metrics rank the held-out movie among 100 unrated ones (fixed "
        "seed, the same for every model), full metrics among every unrated movie.",
        "",
        "| model | sampled HR@5 | HR@10 | HR@20 | sampled nDCG@10 | full HR@10 | "
        "full nDCG@10 | full nDCG@20 | coverage@10 | train s | s/epoch | epochs "
        "(best) | peak RSS MB | p vs LRML |",
        "|" + "---|" * 14,
    ]
    lrml = next(r for r in results if r["model"] == "lrml")
    for r in results:
        m = r["metrics"]
        per_epoch = f"{r['seconds_per_epoch']:.2f}" if r["seconds_per_epoch"] else "-"
        p_value = (
            "-"
            if r is lrml
            else f"{paired_p_value(lrml['sampled_ndcg10_per_user'], r['sampled_ndcg10_per_user']):.2g}"
        )
        lines.append(
            f"| {r['model']} | {m['sampled_hr@5']:.4f} | {m['sampled_hr@10']:.4f} | "
            f"{m['sampled_hr@20']:.4f} | {m['sampled_ndcg@10']:.4f} | "
            f"{m['full_hr@10']:.4f} | {m['full_ndcg@10']:.4f} | {m['full_ndcg@20']:.4f} | "
            f"{m['full_coverage@10']:.3f} | {r['train_seconds']:.1f} | {per_epoch} | "
            f"{r['epochs']} ({r['best_epoch']}) | {r['peak_rss_mb']:.0f} | {p_value} |"
        )
    lines += ["", "p: Wilcoxon signed-rank test on per-user sampled nDCG@10.", ""]
    if scale:
        lines += [
            "## Scale: synthetic MovieLens-20M shape",
            "",
            "138,000 users, 27,000 items, 20,000,000 interactions with power-law "
            "popularity; embedding_dim 64, memory_size 20, batch 1024, one negative.",
            "",
            f"- data generation and split: {scale['prepare_seconds']:.1f} s",
            f"- one training epoch: {scale['epoch_seconds']:.1f} s",
            f"- top-10 for one user over 27,000 items: {scale['top10_ms_median']:.1f} ms "
            "(median of 25)",
            f"- peak RSS: {scale['peak_rss_mb']:.0f} MB",
            "",
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, help="(internal) run one model")
    parser.add_argument("--scale-child", action="store_true", help="(internal)")
    parser.add_argument("--skip-scale", action="store_true", help="skip the 20M figures")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args()

    if args.model:
        print(json.dumps(train_and_evaluate(args.model, args.threads)))
        return 0
    if args.scale_child:
        print(json.dumps(measure_scale(args.threads)))
        return 0

    results = []
    for name in MODELS:
        print(f"training {name} ...", file=sys.stderr, flush=True)
        results.append(run_child(["--model", name, "--threads", str(args.threads)]))
    scale = None
    if not args.skip_scale:
        print("measuring the 20M-scale figures ...", file=sys.stderr, flush=True)
        scale = run_child(["--scale-child", "--threads", str(args.threads)])
    text = render(results, scale, args.threads)
    args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
