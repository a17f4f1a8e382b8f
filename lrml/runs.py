"""Run folders: config, per-epoch metrics, weights and vocabularies of one training run.

A run folder under the models directory holds:

- ``config.json``: the `TrainConfig`;
- ``status.json``: state, process id, epoch and message, rewritten atomically;
- ``metrics.jsonl``: one JSON object per finished epoch;
- ``weights.safetensors``: the best epoch's weights, replaced atomically;
- ``checkpoint.safetensors``: the last complete epoch's model, optimizer and
  random state, from which a stopped or crashed run resumes;
- ``vocab.json``: the external user and item ids, in index order;
- ``test_metrics.json``: the final evaluation, once training ends;
- ``train.log``: the training process's log.

Nothing here unpickles: weights load through safetensors, the rest is JSON.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from lrml.config import TrainConfig
from lrml.model import LRML
from lrml.vocab import Vocabulary

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR_ENV = "LRML_MODELS_DIR"

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
WEIGHTS_FILE = "weights.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
VOCAB_FILE = "vocab.json"
TEST_METRICS_FILE = "test_metrics.json"
LOG_FILE = "train.log"
STOP_FILE = "stop-requested"

RUN_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
WEIGHT_NAMES = ("user_embeddings", "item_embeddings", "keys", "memories")

# States a run can be in. A "queued" run waits for a free slot and has no
# process. The live states are checked against their process when read, so a
# killed process shows as "interrupted".
LIVE_STATES = ("starting", "running", "stopping")
ACTIVE_STATES = ("queued", *LIVE_STATES)
FINAL_STATES = ("finished", "stopped", "failed", "interrupted")


def models_dir() -> Path:
    """Return the models folder: $LRML_MODELS_DIR, else ``models/`` in the repository."""
    return Path(os.environ.get(MODELS_DIR_ENV, REPO_ROOT / "models"))


def validate_run_name(name: str) -> str:
    """Return ``name`` if it is a safe folder name, else raise ValueError.

    A run name is 1 to 64 letters, digits, dots, dashes or underscores, starting
    with a letter or digit, so that no name can point outside the models folder.
    """
    if not isinstance(name, str) or not RUN_NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"invalid run name {name!r}: use 1 to 64 letters, digits, '.', '-' or "
            "'_', starting with a letter or digit"
        )
    return name


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename."""
    text = json.dumps(payload, indent=2, sort_keys=True)
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_atomic(path: Path, write: Any) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it.

    Readers see the old file or the new one, never a half-written one. If
    ``write`` raises (a full disk, say), the temporary file is removed and
    ``path`` is left as it was.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Run:
    """A handle on one run folder; every property reads the folder afresh."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> TrainConfig:
        return TrainConfig.from_dict(self._read_json(CONFIG_FILE))

    def status(self) -> dict[str, Any]:
        """Return the run's status, with dead processes reported as interrupted."""
        try:
            status = self._read_json(STATUS_FILE)
        except FileNotFoundError:
            return {"state": "unknown", "message": "status file missing"}
        if status.get("state") in LIVE_STATES and not _process_alive(status.get("pid")):
            status = {
                **status,
                "state": "interrupted",
                "message": "the training process ended without finishing; "
                "the weights of its best completed epoch are kept",
            }
        return status

    def set_status(self, state: str, **fields: Any) -> None:
        try:
            previous = self._read_json(STATUS_FILE)
        except (FileNotFoundError, json.JSONDecodeError):
            previous = {}
        write_json_atomic(
            self.path / STATUS_FILE,
            {**previous, **fields, "state": state, "updated_at": now_iso()},
        )

    def metrics(self) -> list[dict[str, Any]]:
        """Return the per-epoch records, skipping a last line cut off mid-write."""
        path = self.path / METRICS_FILE
        if not path.exists():
            return []
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("skipping an unreadable line in %s", path)
        return records

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.path / METRICS_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def test_metrics(self) -> dict[str, Any] | None:
        try:
            return self._read_json(TEST_METRICS_FILE)
        except FileNotFoundError:
            return None

    def has_weights(self) -> bool:
        return (self.path / WEIGHTS_FILE).exists()

    def rewrite_metrics(self, records: list[dict[str, Any]]) -> None:
        """Replace the metrics file with ``records``, atomically."""
        text = "".join(json.dumps(record) + "\n" for record in records)
        write_atomic(
            self.path / METRICS_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8")
        )

    def checkpoint_epoch(self) -> int | None:
        """Return the epoch the checkpoint was written after, or None without one."""
        path = self.path / CHECKPOINT_FILE
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                return int((handle.metadata() or {})["epoch"])
        except (SafetensorError, OSError, KeyError, ValueError):
            return None

    def request_stop(self) -> None:
        (self.path / STOP_FILE).touch()

    def stop_requested(self) -> bool:
        return (self.path / STOP_FILE).exists()

    def save_vocabularies(self, users: Vocabulary, items: Vocabulary) -> None:
        write_json_atomic(
            self.path / VOCAB_FILE, {"users": users.to_list(), "items": items.to_list()}
        )

    def vocabularies(self) -> tuple[Vocabulary, Vocabulary]:
        payload = self._read_json(VOCAB_FILE)
        return (
            Vocabulary(payload["users"], kind="user"),
            Vocabulary(payload["items"], kind="item"),
        )

    def save_weights(self, model: LRML, metadata: dict[str, str] | None = None) -> None:
        """Replace the weights file atomically, so a reader never sees half a file."""
        self._save_tensors(
            {name: getattr(model, name) for name in WEIGHT_NAMES}, metadata or {}
        )

    def save_weights_from_state(
        self, state: dict[str, torch.Tensor], epoch: int
    ) -> None:
        """Write the weights file from a model ``state_dict``, atomically."""
        self._save_tensors(
            {name: state[name] for name in WEIGHT_NAMES}, {"epoch": str(epoch)}
        )

    def _save_tensors(
        self, tensors: dict[str, torch.Tensor], metadata: dict[str, str]
    ) -> None:
        tensors = {
            name: value.detach().cpu().contiguous() for name, value in tensors.items()
        }
        write_atomic(
            self.path / WEIGHTS_FILE,
            lambda tmp: save_file(tensors, str(tmp), metadata=metadata),
        )

    def load_model(self, device: str | torch.device = "cpu") -> LRML:
        """Build the model from ``config.json`` and ``weights.safetensors``.

        Raises
        ------
        FileNotFoundError
            If the run has no weights yet.
        ValueError
            If the weights file is not a valid safetensors file or its tensors
            do not match the config.
        """
        path = self.path / WEIGHTS_FILE
        if not path.exists():
            raise FileNotFoundError(
                f"run {self.name!r} has no weights yet: wait for its first epoch "
                "to finish, or pick another run"
            )
        try:
            tensors = load_file(str(path), device=str(device))
        except (SafetensorError, OSError) as error:
            raise ValueError(
                f"{path} is not a readable safetensors file ({error}); "
                "delete the run and train it again"
            ) from error

        config = self.config
        missing = [name for name in WEIGHT_NAMES if name not in tensors]
        if missing:
            raise ValueError(f"{path} lacks the tensor(s) {', '.join(missing)}")
        n_users, dim = tensors["user_embeddings"].shape
        n_items = tensors["item_embeddings"].shape[0]
        memory_size = tensors["keys"].shape[0]
        if (dim, memory_size) != (config.embedding_dim, config.memory_size):
            raise ValueError(
                f"{path} holds embedding_dim {dim} and memory_size {memory_size}, but "
                f"config.json says {config.embedding_dim} and {config.memory_size}"
            )
        model = LRML(
            n_users,
            n_items,
            embedding_dim=dim,
            memory_size=memory_size,
            clip_radius=config.clip_radius,
            squared=config.distance == "squared_l2",
        )
        model.load_state_dict(tensors)
        model.to(device)
        model.eval()
        return model

    def _read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text(encoding="utf-8"))


def create_run(
    config: TrainConfig, name: str | None = None, root: Path | None = None
) -> Run:
    """Create a new run folder with its config and a "queued" status.

    The folder is made with a single ``mkdir``, so two callers racing for the
    same name cannot both get it: the second one gets FileExistsError.
    """
    root = Path(root) if root is not None else models_dir()
    root.mkdir(parents=True, exist_ok=True)
    name = validate_run_name(name) if name else default_run_name(config, root)
    path = root / name
    path.mkdir()
    run = Run(path)
    write_json_atomic(path / CONFIG_FILE, config.to_dict())
    run.set_status("queued", created_at=now_iso(), message="waiting to start")
    return run


def default_run_name(config: TrainConfig, root: Path) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{config.dataset}-d{config.embedding_dim}-n{config.memory_size}-{stamp}"
    name, suffix = base, 1
    while (root / name).exists():
        suffix += 1
        name = f"{base}-{suffix}"
    return name


def open_run(name_or_path: str | Path, root: Path | None = None) -> Run:
    """Return the run named ``name_or_path`` in the models folder, or at that path.

    Raises
    ------
    FileNotFoundError
        If there is no run folder there; the message lists what to do.
    """
    candidate = Path(name_or_path)
    if (candidate / CONFIG_FILE).exists():
        return Run(candidate)
    root = Path(root) if root is not None else models_dir()
    name = validate_run_name(str(name_or_path))
    path = root / name
    if not (path / CONFIG_FILE).exists():
        raise FileNotFoundError(
            f"no run {name!r} in {root}: list runs with 'python -m lrml runs' "
            "or train one with 'python -m lrml train'"
        )
    return Run(path)


def list_runs(root: Path | None = None) -> list[Run]:
    """Return every run folder in the models folder, newest first."""
    root = Path(root) if root is not None else models_dir()
    if not root.is_dir():
        return []
    runs = [Run(path) for path in root.iterdir() if (path / CONFIG_FILE).is_file()]
    return sorted(
        runs, key=lambda run: (run.path / CONFIG_FILE).stat().st_mtime, reverse=True
    )


def _process_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes: it will never write another epoch.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
