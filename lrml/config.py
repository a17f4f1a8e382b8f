"""Training configuration: one frozen, validated dataclass saved beside the weights."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


def _int_field(default: int, low: int, high: int, help: str) -> Any:
    return field(default=default, metadata={"low": low, "high": high, "help": help})


def _float_field(default: float, low: float, high: float, help: str) -> Any:
    return field(default=default, metadata={"low": low, "high": high, "help": help})


def _choice_field(default: str, choices: tuple[str, ...], help: str) -> Any:
    return field(default=default, metadata={"choices": choices, "help": help})


def _optional_field(low: float, high: float, help: str) -> Any:
    # None is valid and is the default; any other value must lie in [low, high].
    return field(
        default=None,
        metadata={"low": low, "high": high, "help": help, "optional": True},
    )


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one LRML training run.

    Every field is checked on creation, so a config that exists is valid. The
    ranges live in each field's metadata (``low``, ``high`` or ``choices``), and
    the Train page and the command line read them from there.

    The defaults come from `bench/search.py`, a plain staged grid ranked by
    validation HR@10 on MovieLens-100K (results in `bench/SEARCH.md`).

    Raises
    ------
    ValueError
        If a field is outside its range, naming the field, the range and the value.
    """

    dataset: str = field(
        default="ml-100k", metadata={"help": "dataset name, for example ml-100k"}
    )
    embedding_dim: int = _int_field(32, 2, 1024, "size of user and item vectors")
    memory_size: int = _int_field(20, 1, 512, "number of memory slots N")
    margin: float = _float_field(
        0.25, 0.0, 10.0, "hinge margin between a positive and a negative distance"
    )
    learning_rate: float = _float_field(1e-3, 1e-6, 1.0, "optimizer step size")
    epochs: int = _int_field(50, 1, 10_000, "number of passes over the training set")
    batch_size: int = _int_field(1024, 1, 1_000_000, "positive pairs per step")
    num_negatives: int = _int_field(
        10, 1, 1000, "negative items sampled per positive pair"
    )
    negative_reduction: str = _choice_field(
        "hardest",
        ("sum", "mean", "hardest"),
        "how the hinge terms of one positive's negatives are combined",
    )
    negative_relation: str = _choice_field(
        "own",
        ("own", "shared"),
        "whether a negative pair computes its own relation vector (own) or reuses "
        "the positive pair's (shared)",
    )
    distance: str = _choice_field(
        "l2",
        ("l2", "squared_l2"),
        "distance between p + r and q: Euclidean or squared Euclidean",
    )
    clip_radius: float = _float_field(
        1.0, 1e-3, 100.0, "maximum norm of looked-up user and item vectors"
    )
    l2_weight: float = _float_field(
        0.0, 0.0, 10.0, "weight of squared L2 on looked-up vectors"
    )
    init_scale: float = _float_field(
        0.03, 1e-4, 10.0, "standard deviation of the normal initialisation"
    )
    optimizer: str = _choice_field(
        "adam",
        ("adam", "adagrad", "sgd"),
        "optimizer used for every parameter; adagrad and sgd update only the "
        "embedding rows a batch used, which is much faster on large catalogues",
    )
    patience: int = _int_field(
        5,
        0,
        10_000,
        "epochs without a better validation HR@10 before stopping (0: never)",
    )
    refit: str = _choice_field(
        "off",
        ("off", "on"),
        "on: after early stopping picks the best epoch, train a fresh model on "
        "training plus validation pairs for that many epochs and keep it",
    )
    seed: int = _int_field(0, 0, 2**31 - 1, "seed for initialisation and sampling")
    min_rating: float | None = _optional_field(
        -1_000_000.0,
        1_000_000.0,
        "keep only ratings at or above this value as positives (None: every "
        "rating counts, whatever its value)",
    )
    k_core: int | None = _optional_field(
        1,
        10_000,
        "after the rating threshold, keep only users and items with at least this "
        "many interactions, repeatedly (None or 1: keep all)",
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_field(f, getattr(self, f.name))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build a config from a mapping, rejecting names it does not know."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown config field(s) {', '.join(unknown)}; "
                f"known fields are {', '.join(sorted(known))}"
            )
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return self.from_dict({**self.to_dict(), **changes})


def config_fields() -> list[dataclasses.Field]:
    """Return the fields of `TrainConfig` in declaration order, for forms and help."""
    return list(dataclasses.fields(TrainConfig))


def is_int_field(f: dataclasses.Field) -> bool:
    """Return whether a numeric field takes integers (``int`` or ``int | None``)."""
    return f.type is int or str(f.type).startswith("int")


def _check_field(f: dataclasses.Field, value: Any) -> None:
    meta = f.metadata
    optional = meta.get("optional", False)
    if optional and value is None:
        return
    if "choices" in meta:
        if value not in meta["choices"]:
            choices = ", ".join(meta["choices"])
            raise ValueError(f"{f.name} must be one of {choices}; got {value!r}")
        return

    if "low" not in meta:
        if not isinstance(value, str) or not value:
            raise ValueError(f"{f.name} must be a non-empty string; got {value!r}")
        return

    low, high = meta["low"], meta["high"]
    if is_int_field(f):
        valid_type = isinstance(value, int) and not isinstance(value, bool)
        kind = "an integer"
    else:
        valid_type = isinstance(value, (int, float)) and not isinstance(value, bool)
        valid_type = valid_type and math.isfinite(value)
        kind = "a finite number"
    # The messages of an optional field (None or a number) mention None.
    none_or = "None or " if optional else ""
    or_none = " or None" if optional else ""
    if not valid_type:
        raise ValueError(
            f"{f.name} must be {none_or}{kind} in [{low}, {high}]; got {value!r}"
        )
    if not low <= value <= high:
        raise ValueError(f"{f.name} must be in [{low}, {high}]{or_none}; got {value!r}")
