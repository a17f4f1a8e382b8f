"""Run folders: config, per-epoch metrics, weights and vocabularies of one training run.

A run folder under the models directory holds:

- ``config.json``: the `TrainConfig`;
- ``status.json``: state, process id and start time, epoch and message,
  rewritten atomically;
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
from lrml.data import dataset_label
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
# Names of `write_atomic`'s temporary files: tempfile.mkstemp adds 8 characters.
TEMP_FILE_PATTERN = re.compile(r"\.[A-Za-z0-9._-]+\.[a-z0-9_]{8}")
WEIGHT_NAMES = ("user_embeddings", "item_embeddings", "keys", "memories")

# States a run can be in. A "queued" run waits for a free slot and has no
# process. The live states are checked against their process when read, so a
# killed process shows as "interrupted".
LIVE_STATES = ("starting", "running", "stopping")
ACTIVE_STATES = ("queued", *LIVE_STATES)
FINAL_STATES = ("finished", "stopped", "failed", "interrupted")
# The state `Run.status` reports when status.json is missing or unreadable.
UNKNOWN_STATE = "unknown"


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


def now_iso(timespec: str = "seconds") -> str:
    """Return the current UTC time in ISO 8601, to ``timespec`` precision."""
    return datetime.now(UTC).isoformat(timespec=timespec)


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
    _fsync_directory(path.parent)


def _fsync_directory(folder: Path) -> None:
    # Makes the rename itself survive a power cut; some file systems refuse it.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def process_identity(pid: int) -> dict[str, Any]:
    """Return the status fields that identify process ``pid``: its id and start time.

    The start time distinguishes a live process from a later one that reuses the
    same id, for example after a reboot. It is None where ``/proc`` is not available.
    """
    return {"pid": pid, "pid_start": process_start_time(pid)}


def process_start_time(pid: int) -> int | None:
    """Return process ``pid``'s start time in clock ticks since boot, from ``/proc``.

    Returns None if the process does not exist or ``/proc`` is not available.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # Field 22 (starttime); the fields after the command name start at field 3.
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


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
        """Return the run's status, with dead processes reported as interrupted.

        A live state ("starting", "running", "stopping") reads as "interrupted"
        when its process no longer exists, or when its process id now belongs to
        a later process. The file itself is left unchanged. A missing or
        unreadable status file reads as state "unknown", with a message that
        says why.
        """
        try:
            status = self._read_json(STATUS_FILE)
        except FileNotFoundError:
            return {"state": UNKNOWN_STATE, "message": "status.json is missing"}
        except (OSError, ValueError) as error:
            # ValueError covers JSONDecodeError and UnicodeDecodeError.
            return {
                "state": UNKNOWN_STATE,
                "message": f"status.json is unreadable ({error})",
            }
        if not isinstance(status, dict) or not isinstance(status.get("state"), str):
            return {
                "state": UNKNOWN_STATE,
                "message": "status.json does not contain a state",
            }
        if status["state"] in LIVE_STATES and not _process_alive(
            status.get("pid"), status.get("pid_start")
        ):
            status = {
                **status,
                "state": "interrupted",
                "message": self._interrupted_message(),
            }
        return status

    def _interrupted_message(self) -> str:
        epoch = self.checkpoint_epoch()
        if epoch is None:
            return (
                "the training process ended before its first epoch was saved; "
                "start the run again"
            )
        return (
            "the training process ended without finishing; the checkpoint of "
            f"epoch {epoch} and the best epoch's weights are kept, so resume the "
            "run to continue from there"
        )

    def set_status(self, state: str, **fields: Any) -> None:
        """Set ``state`` and merge ``fields`` into status.json, atomically.

        Writers must not race: `lrml.jobs` holds its lock on the models folder
        for every writer but the run's own training process.
        """
        try:
            previous = self._read_json(STATUS_FILE)
        except (OSError, ValueError):
            previous = {}
        if not isinstance(previous, dict):
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

    def remove_temp_files(self) -> list[Path]:
        """Delete the temporary files that a process killed mid-write left behind.

        `write_atomic` names them ``.FILE.XXXXXXXX`` beside the file it replaces.
        Call this only while no process writes into the run folder.
        """
        removed = []
        for path in self.path.iterdir():
            if TEMP_FILE_PATTERN.fullmatch(path.name) and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

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
    # A dataset may be a path, so only its file-name-safe label goes in the name.
    label = dataset_label(config.dataset)[:24]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{label}-d{config.embedding_dim}-n{config.memory_size}-{stamp}"
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


def _process_alive(pid: Any, start_time: Any = None) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if isinstance(start_time, int) and process_start_time(pid) not in (
        start_time,
        None,
    ):
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
