"""The interactions a run trains on: its config's dataset, filtered by its config.

A run's ``min_rating`` and ``k_core`` decide which ratings count as implicit
positives (see `lrml.prepare`). The runner, `lrml.inference` and the command
line build a run's split from `run_dataset`, so the vocabularies saved with a
run's weights match the users and items of the data they load again.
"""

from __future__ import annotations

import dataclasses
import logging

from lrml.config import TrainConfig
from lrml.data import Dataset, load_dataset
from lrml.dataset import DataError
from lrml.prepare import prepare_interactions
from lrml.split import MIN_INTERACTIONS_FOR_EVALUATION

logger = logging.getLogger(__name__)


def run_dataset(config: TrainConfig, dataset: Dataset | None = None) -> Dataset:
    """Return ``config.dataset`` with only the interactions a run trains on.

    Parameters
    ----------
    config : TrainConfig
        Its ``dataset`` names the data, and ``min_rating`` and ``k_core`` filter it.
    dataset : Dataset, optional
        The loaded ``config.dataset``, for callers that cache it. Loaded when None.

    Returns
    -------
    Dataset
        The same items, users, name and source, and the kept interactions.
        Without a filter, ``dataset`` itself.

    Raises
    ------
    DataError
        If the dataset cannot be loaded, or the filter leaves fewer than two
        users or two items, or no user with enough interactions to hold one
        out for validation and one for testing. DataError is a ValueError.
    """
    dataset = dataset if dataset is not None else load_dataset(config.dataset)
    if config.min_rating is None and config.k_core in (None, 1):
        return dataset

    interactions = dataset.interactions
    kept = prepare_interactions(interactions, config.min_rating, config.k_core)
    _check_enough(kept, dataset.name, config)
    logger.info(
        "%s with %s: %d of %d interactions, %d users, %d items",
        dataset.name,
        filter_description(config),
        len(kept),
        len(interactions),
        kept["user_id"].nunique(),
        kept["item_id"].nunique(),
    )
    return dataclasses.replace(dataset, interactions=kept.reset_index(drop=True))


def filter_description(config: TrainConfig) -> str:
    """Describe a config's filter in words, such as ``"ratings >= 4, 5-core"``."""
    steps = []
    if config.min_rating is not None:
        steps.append(f"ratings >= {config.min_rating:g}")
    if config.k_core not in (None, 1):
        steps.append(f"{config.k_core}-core")
    return ", ".join(steps) or "every rating"


def _check_enough(kept, name: str, config: TrainConfig) -> None:
    users = kept["user_id"].nunique()
    items = kept["item_id"].nunique()
    per_user = kept.groupby("user_id")["item_id"].nunique()
    evaluated = int((per_user >= MIN_INTERACTIONS_FOR_EVALUATION).sum())
    if users >= 2 and items >= 2 and evaluated >= 1:
        return
    raise DataError(
        f"{name} filtered by {filter_description(config)} leaves {users} user(s), "
        f"{items} item(s) and {evaluated} user(s) with at least "
        f"{MIN_INTERACTIONS_FOR_EVALUATION} interactions. Training needs at least "
        "2 users, 2 items and 1 such user. Lower min_rating or k_core."
    )
