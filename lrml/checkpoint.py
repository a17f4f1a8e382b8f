"""Checkpoints: everything a training run needs to continue where it stopped.

One safetensors file contains the model, the optimizer state, the best epoch's
weights and, in its string metadata, the epoch counter, the model selection
state and the numpy generator's state. Nothing is pickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from lrml.training import Trainer

FORMAT_VERSION = "1"


def checkpoint_tensors(
    trainer: Trainer, last_record: dict[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Return the tensors and string metadata that describe ``trainer`` fully.

    ``last_record`` is the metrics line of the epoch just finished, kept so that
    a resume can restore it if the process died before writing it.
    """
    tensors: dict[str, torch.Tensor] = {}
    for name, value in trainer.model.state_dict().items():
        tensors[f"model.{name}"] = value.detach().cpu().contiguous()
    if trainer.best_state is not None:
        for name, value in trainer.best_state.items():
            tensors[f"best.{name}"] = value.detach().cpu().contiguous()

    optimizer_state = trainer.optimizer.state_dict()
    scalar_state: dict[str, dict[str, Any]] = {}
    for index, state in optimizer_state["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalar_state.setdefault(str(index), {})[key] = value

    metadata = {
        "format": FORMAT_VERSION,
        "epoch": str(trainer.epoch),
        "best_epoch": str(trainer.best_epoch),
        "best_score": repr(trainer.best_score),
        "best_validation": json.dumps(trainer.best_validation),
        "optimizer": type(trainer.optimizer).__name__,
        "optimizer_scalars": json.dumps(scalar_state),
        "optimizer_param_groups": json.dumps(optimizer_state["param_groups"]),
        "numpy_rng": json.dumps(trainer.rng.bit_generator.state),
        "last_record": json.dumps(last_record),
    }
    return tensors, metadata


def save_checkpoint(
    path: Path, trainer: Trainer, last_record: dict[str, Any] | None = None
) -> None:
    """Write ``trainer``'s state to ``path`` (callers make the write atomic)."""
    tensors, metadata = checkpoint_tensors(trainer, last_record)
    save_file(tensors, str(path), metadata=metadata)


def restore_checkpoint(path: Path, trainer: Trainer) -> None:
    """Load a checkpoint written by `save_checkpoint` into ``trainer``.

    Raises
    ------
    ValueError
        If the file is not a readable checkpoint of this format, or its
        tensors do not fit the trainer's model and optimizer. The trainer may
        then be partly restored and should be discarded.
    """
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a readable checkpoint ({error})") from error
    if metadata.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format {metadata.get('format')!r}; "
            f"this version reads format {FORMAT_VERSION}"
        )
    try:
        state = _parse_metadata(metadata)
    except (KeyError, ValueError, TypeError) as error:
        raise ValueError(f"{path} has invalid metadata ({error!r})") from error

    # torch loads one optimizer's state into another without complaint.
    saved_optimizer = metadata.get("optimizer")
    if saved_optimizer not in (None, type(trainer.optimizer).__name__):
        raise ValueError(
            f"{path} does not match the run's config: it contains {saved_optimizer} "
            f"state, but the run uses {type(trainer.optimizer).__name__}"
        )
    optimizer_state: dict[str, Any] = {
        "state": {},
        "param_groups": state.pop("optimizer_param_groups"),
    }
    for name, value in _prefixed(tensors, "optimizer.").items():
        index, key = name.split(".", 1)
        optimizer_state["state"].setdefault(int(index), {})[key] = value
    for index, values in state.pop("optimizer_scalars").items():
        optimizer_state["state"].setdefault(int(index), {}).update(values)
    try:
        trainer.model.load_state_dict(_prefixed(tensors, "model."))
        trainer.optimizer.load_state_dict(optimizer_state)
    except (RuntimeError, ValueError, KeyError) as error:
        raise ValueError(f"{path} does not match the run's config: {error}") from error

    trainer.rng.bit_generator.state = state.pop("numpy_rng")
    trainer.epoch = state["epoch"]
    trainer.resumed_at = state["epoch"]
    trainer.best_epoch = state["best_epoch"]
    trainer.best_score = state["best_score"]
    trainer.best_validation = state["best_validation"]
    trainer.best_state = _prefixed(tensors, "best.") or None
    trainer.last_record = state["last_record"]


def _parse_metadata(metadata: dict[str, str]) -> dict[str, Any]:
    return {
        "epoch": int(metadata["epoch"]),
        "best_epoch": int(metadata["best_epoch"]),
        "best_score": float(metadata["best_score"]),
        "best_validation": json.loads(metadata["best_validation"]),
        "optimizer_scalars": json.loads(metadata["optimizer_scalars"]),
        "optimizer_param_groups": json.loads(metadata["optimizer_param_groups"]),
        "numpy_rng": json.loads(metadata["numpy_rng"]),
        "last_record": json.loads(metadata.get("last_record", "null")),
    }


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {
        name[len(prefix) :]: value
        for name, value in tensors.items()
        if name.startswith(prefix)
    }
