"""Tests for lrml.config: validation, from_dict, replace and field metadata."""

from __future__ import annotations

import dataclasses
import re

import pytest

from lrml.config import TrainConfig, config_fields

# Optional fields (None or a value in range) have their own tests at the end.
RANGED_FIELDS = [
    f for f in config_fields() if "low" in f.metadata and not f.metadata.get("optional")
]
CHOICE_FIELDS = [f for f in config_fields() if "choices" in f.metadata]


def _below(f: dataclasses.Field):
    low = f.metadata["low"]
    return low - 1 if f.type in ("int", int) else low - abs(low) - 0.5


def _above(f: dataclasses.Field):
    high = f.metadata["high"]
    return high + 1 if f.type in ("int", int) else high * 2 + 1.0


def test_defaults_match_field_defaults():
    config = TrainConfig()

    for f in config_fields():
        assert getattr(config, f.name) == f.default, f.name


def test_defaults_within_declared_ranges():
    config = TrainConfig()

    for f in RANGED_FIELDS:
        value = getattr(config, f.name)
        assert f.metadata["low"] <= value <= f.metadata["high"], f.name


@pytest.mark.parametrize("f", RANGED_FIELDS, ids=lambda f: f.name)
def test_field_below_range_rejected(f):
    value = _below(f)
    low, high = f.metadata["low"], f.metadata["high"]
    expected = re.escape(f"{f.name} must be in [{low}, {high}]; got {value!r}")

    with pytest.raises(ValueError, match=expected):
        TrainConfig(**{f.name: value})


@pytest.mark.parametrize("f", RANGED_FIELDS, ids=lambda f: f.name)
def test_field_above_range_rejected(f):
    value = _above(f)
    low, high = f.metadata["low"], f.metadata["high"]
    expected = re.escape(f"{f.name} must be in [{low}, {high}]; got {value!r}")

    with pytest.raises(ValueError, match=expected):
        TrainConfig(**{f.name: value})


@pytest.mark.parametrize("f", RANGED_FIELDS, ids=lambda f: f.name)
def test_field_bounds_accepted(f):
    low_config = TrainConfig(**{f.name: f.metadata["low"]})
    high_config = TrainConfig(**{f.name: f.metadata["high"]})

    assert getattr(low_config, f.name) == f.metadata["low"]
    assert getattr(high_config, f.name) == f.metadata["high"]


@pytest.mark.parametrize("f", CHOICE_FIELDS, ids=lambda f: f.name)
def test_choice_field_accepts_each_choice(f):
    for choice in f.metadata["choices"]:
        assert getattr(TrainConfig(**{f.name: choice}), f.name) == choice


@pytest.mark.parametrize("f", CHOICE_FIELDS, ids=lambda f: f.name)
def test_choice_field_rejects_other_value(f):
    expected = (
        f"{f.name} must be one of {', '.join(f.metadata['choices'])}; got 'bogus'"
    )

    with pytest.raises(ValueError, match=re.escape(expected)):
        TrainConfig(**{f.name: "bogus"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("embedding_dim", True),
        ("embedding_dim", 8.0),
        ("epochs", 2.5),
        ("batch_size", "64"),
    ],
)
def test_int_field_rejects_non_integer(name, value):
    with pytest.raises(ValueError, match=rf"^{name} must be an integer in \["):
        TrainConfig(**{name: value})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "0.1", None, False])
def test_float_field_rejects_non_numbers(value):
    with pytest.raises(
        ValueError, match=r"^learning_rate must be a finite number in \["
    ):
        TrainConfig(learning_rate=value)


def test_float_field_accepts_integer():
    assert TrainConfig(margin=1).margin == 1


@pytest.mark.parametrize("value", ["", None, 7])
def test_dataset_must_be_nonempty_string(value):
    with pytest.raises(ValueError, match=r"^dataset must be a non-empty string"):
        TrainConfig(dataset=value)


def test_config_is_frozen():
    config = TrainConfig()

    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3


def test_dict_round_trip():
    config = TrainConfig(embedding_dim=16, distance="squared_l2", seed=3)

    assert TrainConfig.from_dict(config.to_dict()) == config


def test_from_dict_partial_uses_defaults():
    config = TrainConfig.from_dict({"epochs": 4})

    assert config == TrainConfig(epochs=4)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown config field\(s\) bogus, extra;"):
        TrainConfig.from_dict({"epochs": 4, "extra": 1, "bogus": 2})


def test_from_dict_lists_known_fields():
    with pytest.raises(ValueError, match="known fields are .*embedding_dim"):
        TrainConfig.from_dict({"bogus": 2})


def test_from_dict_validates_values():
    with pytest.raises(ValueError, match=r"memory_size must be in \[1, 512\]; got 0"):
        TrainConfig.from_dict({"memory_size": 0})


def test_replace_returns_new_config():
    config = TrainConfig()

    changed = config.replace(epochs=2, margin=0.25)

    assert changed.epochs == 2
    assert changed.margin == 0.25
    assert config == TrainConfig()
    assert changed.embedding_dim == config.embedding_dim


def test_replace_validates_changes():
    with pytest.raises(ValueError, match=r"epochs must be in \[1, 10000\]; got 0"):
        TrainConfig().replace(epochs=0)


def test_replace_rejects_unknown_field():
    with pytest.raises(ValueError, match=r"unknown config field\(s\) epoch;"):
        TrainConfig().replace(epoch=2)


def test_config_fields_in_declaration_order():
    names = [f.name for f in config_fields()]

    assert names == [f.name for f in dataclasses.fields(TrainConfig)]
    assert names[:3] == ["dataset", "embedding_dim", "memory_size"]


def test_config_fields_have_help():
    for f in config_fields():
        assert f.metadata.get("help"), f.name


def test_config_fields_have_range_or_choices():
    for f in config_fields():
        if f.name == "dataset":
            continue
        has_range = "low" in f.metadata and "high" in f.metadata
        assert has_range or "choices" in f.metadata, f.name


# Optional filter fields: min_rating and k_core ---------------------------------


def test_filter_fields_default_to_none():
    config = TrainConfig()

    assert config.min_rating is None
    assert config.k_core is None


def test_filter_fields_accept_values_in_range():
    config = TrainConfig(min_rating=4, k_core=5)

    assert config.min_rating == 4
    assert config.k_core == 5
    assert TrainConfig(min_rating=-0.5).min_rating == -0.5
    assert TrainConfig(k_core=1).k_core == 1
    assert TrainConfig(k_core=10_000).k_core == 10_000


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("k_core", 0, "k_core must be in [1, 10000] or None; got 0"),
        ("k_core", 10_001, "k_core must be in [1, 10000] or None; got 10001"),
        ("k_core", 2.5, "k_core must be None or an integer in [1, 10000]; got 2.5"),
        ("k_core", True, "k_core must be None or an integer in [1, 10000]; got True"),
        ("k_core", "5", "k_core must be None or an integer in [1, 10000]; got '5'"),
        (
            "min_rating",
            2e6,
            "min_rating must be in [-1000000.0, 1000000.0] or None; got 2000000.0",
        ),
        (
            "min_rating",
            float("nan"),
            (
                "min_rating must be None or a finite number in "
                "[-1000000.0, 1000000.0]; got nan"
            ),
        ),
        (
            "min_rating",
            "4",
            (
                "min_rating must be None or a finite number in "
                "[-1000000.0, 1000000.0]; got '4'"
            ),
        ),
    ],
)
def test_filter_field_rejects_invalid_value(name, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(**{name: value})


def test_filter_fields_round_trip_through_dict():
    config = TrainConfig(min_rating=3.5, k_core=10)

    assert TrainConfig.from_dict(config.to_dict()) == config


def test_config_without_filter_fields_loads():
    # A config.json written before the filter fields existed lacks them.
    values = TrainConfig().to_dict()
    del values["min_rating"], values["k_core"]

    config = TrainConfig.from_dict(values)

    assert config.min_rating is None
    assert config.k_core is None


def test_k_core_range_matches_prepare():
    from lrml.prepare import MAX_K_CORE

    [k_core] = [f for f in config_fields() if f.name == "k_core"]

    assert k_core.metadata["high"] == MAX_K_CORE


def test_refit_accepts_off_and_on():
    assert TrainConfig(refit="off").refit == "off"
    assert TrainConfig(refit="on").refit == "on"


def test_refit_rejects_boolean():
    with pytest.raises(ValueError, match="refit must be one of off, on; got True"):
        TrainConfig(refit=True)


def test_config_without_refit_loads():
    # A config.json written before refit existed lacks the field.
    values = TrainConfig().to_dict()
    del values["refit"]

    assert TrainConfig.from_dict(values).refit == TrainConfig().refit
