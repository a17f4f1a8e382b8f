"""A trained run loaded for use: top-K lists, similar movies, users and histories.

Functions take users and movies as row indices into the model's tables
(``user_index``, ``item_index``), and `LoadedRun.user_index` and
`LoadedRun.item_index` map MovieLens ids to them. Scoring runs under
``torch.inference_mode``, and results come back as numpy arrays or DataFrames.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from lrml.config import TrainConfig
from lrml.data import Dataset, load_dataset
from lrml.model import LRML
from lrml.run_data import filter_description, run_dataset
from lrml.runs import Run, open_run
from lrml.split import Split, build_vocabularies, leave_one_out
from lrml.vocab import Vocabulary

logger = logging.getLogger(__name__)

MAX_K = 100
GENRE_SEPARATOR = "|"
USER_ORDERS = ("user_id", "most_active", "least_active")


@dataclass(frozen=True)
class LoadedRun:
    """A run's model in eval mode, with the dataset and split it was trained on.

    ``dataset.interactions`` contains only the interactions the run trained
    on, after its config's ``min_rating`` and ``k_core`` filter, so histories
    and rating counts are those of the training data. ``rated`` contains the
    pairs of the unfiltered data between the run's users and movies, so that a
    movie a user rated below ``min_rating`` still counts as seen.
    """

    run: Run
    config: TrainConfig
    model: LRML
    dataset: Dataset
    split: Split
    rated: sp.csr_matrix | None = None

    @cached_property
    def known(self) -> sp.csr_matrix:
        """The user-by-item matrix of every movie a user has rated or interacted with."""
        matrix = self.split.known_matrix("test").tolil()
        matrix[self.split.test_users, self.split.test_items] = 1.0
        if self.rated is not None:
            matrix = matrix.tocsr() + self.rated
            matrix.data[:] = 1.0
        return matrix.tocsr()

    @cached_property
    def items(self) -> pd.DataFrame:
        """Movie metadata in index order: item_id, title, year, genres."""
        frame = self.dataset.items.set_index("item_id")
        ids = pd.Index(self.split.item_vocab.ids, name="item_id")
        return frame.reindex(ids).reset_index()

    @cached_property
    def genres(self) -> list[str]:
        """Every genre of the catalogue, sorted by name."""
        names = {
            genre
            for text in self.items["genres"].fillna("")
            for genre in text.split(GENRE_SEPARATOR)
            if genre
        }
        return sorted(names)

    @cached_property
    def genre_matrix(self) -> np.ndarray:
        """Boolean (n_items, len(genres)) matrix: whether movie i has genre g."""
        column = {genre: j for j, genre in enumerate(self.genres)}
        matrix = np.zeros((len(self.items), len(self.genres)), dtype=bool)
        for i, text in enumerate(self.items["genres"].fillna("")):
            for genre in text.split(GENRE_SEPARATOR):
                if genre:
                    matrix[i, column[genre]] = True
        return matrix

    @cached_property
    def train_counts(self) -> np.ndarray:
        """Training pairs per user, shape (n_users,)."""
        return np.bincount(self.split.train_users, minlength=self.split.n_users)

    @cached_property
    def users(self) -> pd.DataFrame:
        """One row per user of the vocabulary or of ``dataset.users``, by user_id.

        Columns:

        - user_id, and user_index: -1 for a person in ``dataset.users``
          without ratings, who has no row in the model;
        - age, gender, occupation: ``<NA>`` where the dataset has no
          demographics for the user;
        - ratings: all the user's interactions;
        - train_pairs: the user's interactions in the training split.
        """
        people = self.dataset.users[["user_id", "age", "gender", "occupation"]]
        ids = pd.DataFrame(
            {
                "user_id": np.asarray(self.split.user_vocab.ids, dtype=np.int64),
                "user_index": np.arange(self.split.n_users, dtype=np.int64),
            }
        )
        frame = ids.merge(people, on="user_id", how="outer").sort_values("user_id")
        frame["user_index"] = frame["user_index"].fillna(-1).astype(np.int64)
        counts = self.dataset.interactions["user_id"].value_counts()
        frame["ratings"] = frame["user_id"].map(counts).fillna(0).astype(np.int64)
        index = frame["user_index"].to_numpy()
        known = index >= 0
        train = np.zeros(len(frame), dtype=np.int64)
        train[known] = self.train_counts[index[known]]
        frame["train_pairs"] = train
        return frame.reset_index(drop=True)

    def user_index(self, user_id) -> int:
        """Return the index of an external user id; KeyError names unknown ids."""
        return self.split.user_vocab.index(user_id)

    def item_index(self, item_id) -> int:
        return self.split.item_vocab.index(item_id)


def load_run(name_or_path, dataset: Dataset | None = None) -> LoadedRun:
    """Load a run's weights, dataset and split.

    Parameters
    ----------
    name_or_path : str or path-like
        A run name in the models folder, or a run folder.
    dataset : Dataset, optional
        The loaded ``config.dataset``, unfiltered, for callers that cache it.
        The run's ``min_rating`` and ``k_core`` filter is applied here.

    Raises
    ------
    FileNotFoundError
        If the run or its weights do not exist.
    ValueError
        If the saved vocabularies do not match the dataset as it is now, or the
        run's filter leaves too little data (a `DataError`).
    """
    run = open_run(name_or_path)
    config = run.config
    model = run.load_model()
    unfiltered = dataset or load_dataset(config.dataset)
    dataset = run_dataset(config, unfiltered)
    user_vocab, item_vocab = run.vocabularies()
    data_users, data_items = build_vocabularies(dataset.interactions)
    if user_vocab != data_users or item_vocab != data_items:
        raise ValueError(
            f"run {run.name!r} was trained on a different copy of {config.dataset}: "
            "its user or item ids differ from the data on disk (filter: "
            f"{filter_description(config)}); train the run again"
        )
    if (model.n_users, model.n_items) != (len(user_vocab), len(item_vocab)):
        raise ValueError(
            f"run {run.name!r} has weights for {model.n_users} users and "
            f"{model.n_items} items but vocabularies of {len(user_vocab)} and "
            f"{len(item_vocab)}"
        )
    split = leave_one_out(dataset.interactions, user_vocab, item_vocab)
    rated = None
    if dataset is not unfiltered:
        rated = _rated_matrix(unfiltered.interactions, user_vocab, item_vocab)
    return LoadedRun(
        run=run, config=config, model=model, dataset=dataset, split=split, rated=rated
    )


def _rated_matrix(
    interactions: pd.DataFrame, user_vocab: Vocabulary, item_vocab: Vocabulary
) -> sp.csr_matrix:
    """Return the user-by-item matrix of the pairs whose user and movie are known."""
    users = pd.Index(user_vocab.ids).get_indexer(interactions["user_id"])
    items = pd.Index(item_vocab.ids).get_indexer(interactions["item_id"])
    kept = (users >= 0) & (items >= 0)
    rows, columns = users[kept], items[kept]
    matrix = sp.csr_matrix(
        (np.ones(len(rows)), (rows, columns)), shape=(len(user_vocab), len(item_vocab))
    )
    matrix.data[:] = 1.0
    return matrix


def check_k(k: int, n_items: int) -> int:
    """Return ``k`` if it is a valid list length, else raise ValueError."""
    if (
        isinstance(k, bool)
        or not isinstance(k, (int, np.integer))
        or not 1 <= k <= MAX_K
    ):
        raise ValueError(f"k must be an integer from 1 to {MAX_K}; got {k!r}")
    if k > n_items:
        raise ValueError(f"k={k} is larger than the catalogue of {n_items} movies")
    return int(k)


def recommend(
    loaded: LoadedRun,
    user_index: int,
    k: int = 10,
    exclude_seen: bool = True,
    genres: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Return the top-``k`` movies for one user, best first.

    Parameters
    ----------
    exclude_seen : bool
        Leave out every movie the user rated, held-out ones included, and
        those rated below the run's ``min_rating``.
    genres : sequence of str, optional
        Keep only movies with at least one of these genres.

    Returns
    -------
    pd.DataFrame
        At most ``k`` rows, fewer when fewer movies are left after the
        filters. Columns rank (1-based), item_index, item_id, title, year,
        genres, score (the negative distance ``-||p + r - q||``),
        distance_with_relation and distance_without_relation (``||p - q||``),
        seen. Both distances are squared when the run's config sets
        ``distance="squared_l2"``.

    Raises
    ------
    ValueError
        If ``k`` is invalid, a genre is unknown, the user has no training
        pairs, or no movie is left after the filters.
    """
    k = check_k(k, loaded.split.n_items)
    check_trained_user(loaded, user_index)
    with torch.inference_mode():
        scores = loaded.model.score_all(torch.tensor([user_index]))[0].numpy()
    candidates = candidate_mask(loaded, user_index, exclude_seen, genres)
    top = top_indices(np.where(candidates, scores, -np.inf), k)
    if len(top) == 0:
        raise ValueError(no_candidates_message(loaded, user_index, genres))

    frame = item_rows(loaded, top)
    frame.insert(0, "rank", np.arange(1, len(top) + 1))
    frame["score"] = scores[top]
    frame["distance_with_relation"] = -scores[top]
    frame["distance_without_relation"] = _plain_distances(loaded.model, user_index, top)
    frame["seen"] = _seen(loaded, user_index)[top]
    return frame


def candidate_mask(
    loaded: LoadedRun,
    user_index: int,
    exclude_seen: bool = True,
    genres: Sequence[str] | None = None,
) -> np.ndarray:
    """Return a boolean (n_items,) mask of the movies a top-K list may contain.

    Raises
    ------
    ValueError
        If a genre is not in ``loaded.genres``.
    """
    mask = np.ones(loaded.split.n_items, dtype=bool)
    if exclude_seen:
        mask &= ~_seen(loaded, user_index)
    if genres:
        unknown = [genre for genre in genres if genre not in loaded.genres]
        if unknown:
            raise ValueError(
                f"unknown genre(s) {', '.join(map(repr, unknown))}; use one of "
                f"{', '.join(loaded.genres)}"
            )
        columns = [loaded.genres.index(genre) for genre in genres]
        mask &= loaded.genre_matrix[:, columns].any(axis=1)
    return mask


def check_trained_user(loaded: LoadedRun, user_index: int) -> None:
    """Raise ValueError if the user has no training pairs to learn a vector from.

    An index outside the user table raises IndexError.
    """
    if not 0 <= user_index < loaded.split.n_users:
        raise IndexError(
            f"user index {user_index} is outside 0..{loaded.split.n_users - 1}"
        )
    if loaded.train_counts[user_index] == 0:
        user_id = loaded.split.user_vocab.external(user_index)
        raise ValueError(
            f"user {user_id} has no training history: the model's vector for them "
            "is still its random initialisation. Pick a user with training ratings."
        )


def similar_items(loaded: LoadedRun, item_index: int, k: int = 10) -> pd.DataFrame:
    """Return the ``k`` movies nearest to one movie in the metric space.

    The distance is the Euclidean distance ``||q_i - q_j||`` between clipped
    item vectors. No relation vector takes part, because one exists only for
    a (user, item) pair.

    Returns
    -------
    pd.DataFrame
        ``k`` rows, nearest first: rank, item_index, item_id, title, year,
        genres, distance. The movie itself is left out.

    Raises
    ------
    ValueError
        If ``k`` is invalid or larger than the other movies in the catalogue.
    IndexError
        If ``item_index`` is outside the item table.
    """
    n_items = loaded.split.n_items
    k = check_k(k, n_items - 1)
    if not 0 <= item_index < n_items:
        raise IndexError(f"item index {item_index} is outside 0..{n_items - 1}")
    model = loaded.model
    with torch.inference_mode():
        q = model.items(torch.tensor([item_index]))  # (1, d)
        catalogue = model.items(torch.arange(n_items))  # (n_items, d)
        distances = torch.cdist(q, catalogue)[0].numpy()  # (n_items,)
    scores = -distances.astype(np.float64)
    scores[item_index] = -np.inf
    top = top_indices(scores, k)

    frame = item_rows(loaded, top)
    frame.insert(0, "rank", np.arange(1, len(top) + 1))
    frame["distance"] = distances[top]
    return frame


def compare_top_k(first: pd.DataFrame, second: pd.DataFrame) -> pd.DataFrame:
    """Join two top-K lists of the same user on item_id.

    Parameters
    ----------
    first, second : pd.DataFrame
        Outputs of `recommend`, for example from two runs.

    Returns
    -------
    pd.DataFrame
        One row per movie in either list, ordered by rank_first then
        rank_second: item_id, title, year, genres, rank_first, rank_second
        (``<NA>`` where a list lacks the movie) and in_both.
    """
    columns = ["item_id", "title", "year", "genres", "rank"]
    merged = first[columns].merge(
        second[columns],
        on=["item_id", "title", "year", "genres"],
        how="outer",
        suffixes=("_first", "_second"),
    )
    for column in ("rank_first", "rank_second"):
        merged[column] = merged[column].astype("Int64")
    merged["in_both"] = merged["rank_first"].notna() & merged["rank_second"].notna()
    merged = merged.sort_values(["rank_first", "rank_second"], na_position="last")
    return merged.reset_index(drop=True)


def find_users(
    loaded: LoadedRun,
    min_age: int | None = None,
    max_age: int | None = None,
    genders: Sequence[str] | None = None,
    occupations: Sequence[str] | None = None,
    order: str = "user_id",
) -> pd.DataFrame:
    """Return the users that match a demographic filter.

    Only users with training pairs are returned, because the model has no
    trained vector for the others. Empty ``genders`` or ``occupations`` match
    everyone. A user with an unknown age matches only when neither age bound
    is given.

    Parameters
    ----------
    order : {"user_id", "most_active", "least_active"}
        Sort by id, or by the number of ratings (ties by id).

    Returns
    -------
    pd.DataFrame
        The columns of `LoadedRun.users`.

    Raises
    ------
    ValueError
        If ``order`` is not one of `USER_ORDERS` or ``min_age > max_age``.
    """
    if order not in USER_ORDERS:
        raise ValueError(
            f"order must be one of {', '.join(USER_ORDERS)}; got {order!r}"
        )
    if min_age is not None and max_age is not None and min_age > max_age:
        raise ValueError(
            f"min_age must not exceed max_age; got {min_age} and {max_age}"
        )
    users = loaded.users
    keep = users["train_pairs"].to_numpy() > 0
    ages = users["age"]
    if min_age is not None:
        keep &= (ages >= min_age).fillna(False).to_numpy(dtype=bool)
    if max_age is not None:
        keep &= (ages <= max_age).fillna(False).to_numpy(dtype=bool)
    if genders:
        keep &= users["gender"].isin(list(genders)).to_numpy()
    if occupations:
        keep &= users["occupation"].isin(list(occupations)).to_numpy()
    found = users[keep]
    if order == "most_active":
        found = found.sort_values(["ratings", "user_id"], ascending=[False, True])
    elif order == "least_active":
        found = found.sort_values(["ratings", "user_id"])
    return found.reset_index(drop=True)


def history(loaded: LoadedRun, user_index: int) -> pd.DataFrame:
    """Return every movie the user rated, newest first, with the split it fell in."""
    user_id = loaded.split.user_vocab.external(user_index)
    interactions = loaded.dataset.interactions
    rows = interactions[interactions["user_id"] == user_id].copy()
    rows = rows.sort_values(["timestamp", "item_id"], ascending=False)
    rows["date"] = pd.to_datetime(rows["timestamp"], unit="s").dt.date
    test_item = _held_out_item(loaded, user_index, "test")
    validation_item = _held_out_item(loaded, user_index, "validation")
    rows["part"] = np.where(
        rows["item_id"] == test_item,
        "test",
        np.where(rows["item_id"] == validation_item, "validation", "train"),
    )
    meta = loaded.dataset.items[["item_id", "title", "year", "genres"]]
    rows = rows.merge(meta, on="item_id", how="left")
    return rows[["item_id", "title", "year", "genres", "rating", "date", "part"]]


def genre_mix(loaded: LoadedRun, past: pd.DataFrame) -> pd.DataFrame:
    """Count the genres of a user's rated movies.

    Parameters
    ----------
    past : pd.DataFrame
        Output of `history`.

    Returns
    -------
    pd.DataFrame
        One row per genre that occurs, most frequent first: genre, movies,
        share and mean_rating. The share is of all rated movies, so shares sum
        to more than 1 when movies have several genres.
    """
    indices = loaded.split.item_vocab.indices(past["item_id"].tolist())
    flags = loaded.genre_matrix[indices]  # (n_rated, n_genres)
    movies = flags.sum(axis=0)  # (n_genres,)
    ratings = past["rating"].to_numpy(np.float64)
    rating_sums = flags.T.astype(np.float64) @ ratings  # (n_genres,)
    mix = pd.DataFrame(
        {
            "genre": loaded.genres,
            "movies": movies.astype(np.int64),
            "share": movies / max(1, len(past)),
            "mean_rating": rating_sums / np.maximum(movies, 1),
        }
    )
    mix = mix[mix["movies"] > 0]
    mix = mix.sort_values(["movies", "genre"], ascending=[False, True])
    return mix.reset_index(drop=True)


def top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Return the indices of the ``k`` largest finite scores, best first.

    Fewer than ``k`` come back when fewer scores are finite, because callers
    mark excluded items with ``-inf``.
    """
    k = min(k, int(np.isfinite(scores).sum()))
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top], kind="stable")]


def rank_positions(scores: np.ndarray) -> np.ndarray:
    """Return the 1-based rank of each score, best first. Ties keep index order."""
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[order] = np.arange(1, len(scores) + 1)
    return ranks


def item_rows(loaded: LoadedRun, indices: np.ndarray) -> pd.DataFrame:
    """Return item_index, item_id, title, year and genres of the given items."""
    frame = loaded.items.iloc[indices][["item_id", "title", "year", "genres"]]
    frame = frame.reset_index(drop=True)
    frame.insert(0, "item_index", np.asarray(indices, dtype=np.int64))
    return frame


def _plain_distances(model: LRML, user_index: int, items: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        p = model.users(torch.tensor([user_index]))  # (1, d)
        q = model.items(torch.as_tensor(items))  # (k, d)
        return model.distance(p, torch.zeros_like(q), q).numpy()  # (k,)


def _seen(loaded: LoadedRun, user_index: int) -> np.ndarray:
    return loaded.known[user_index].toarray().ravel() > 0


def no_candidates_message(
    loaded: LoadedRun, user_index: int, genres: Sequence[str] | None
) -> str:
    user_id = loaded.split.user_vocab.external(user_index)
    if genres:
        return (
            f"user {user_id} has seen every movie of the genre(s) "
            f"{', '.join(genres)}; include seen movies or pick other genres"
        )
    return f"user {user_id} has seen every movie"


def _held_out_item(loaded: LoadedRun, user_index: int, stage: str):
    users, items = loaded.split.held_out(stage)
    position = np.searchsorted(users, user_index)
    if position < len(users) and users[position] == user_index:
        return loaded.split.item_vocab.external(items[position])
    return None
