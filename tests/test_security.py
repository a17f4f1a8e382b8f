"""Security properties: server settings, no unpickling, safe names, no unsafe HTML.

The Streamlit settings are checked twice: in ``.streamlit/config.toml`` and on
the listening socket of a started server. A crafted pickle, disguised as a run's
weights and checkpoint, goes through every loader of run files and must be
rejected without running. The sources are scanned for calls that unpickle and
for HTML rendered without escaping. The browser test in tests/e2e checks that
HTML typed into the app is shown as text.
"""

from __future__ import annotations

import ast
import io
import pickle
import tomllib
from pathlib import Path

import pytest
import torch

from lrml import jobs
from lrml.checkpoint import restore_checkpoint
from lrml.cli import main as cli_main
from lrml.config import TrainConfig
from lrml.custom_data import sanitise_file_name
from lrml.data import save_upload
from lrml.dataset import DataError
from lrml.inference import load_run
from lrml.runs import (
    CHECKPOINT_FILE,
    WEIGHTS_FILE,
    create_run,
    open_run,
    validate_run_name,
)
from lrml.training import Trainer
from tests.e2e.harness import StreamlitServer, leaves_loopback

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_TOML = REPO_ROOT / ".streamlit" / "config.toml"
# Streamlit 1.67's default maxUploadSize, in MB.
STREAMLIT_DEFAULT_UPLOAD_MB = 200
APP_SOURCES = sorted(
    [REPO_ROOT / "app.py", *(REPO_ROOT / "pages").glob("*.py")]
    + list((REPO_ROOT / "lrml").glob("*.py"))
)
UI_SOURCES = [path for path in APP_SOURCES if path.parent.name != "lrml"]
LOOPBACK_HEX = {
    "0100007F",  # 127.0.0.1 in /proc/net/tcp (little-endian)
    "00000000000000000000000001000000",  # ::1 in /proc/net/tcp6
}


def relative(path: Path) -> str:
    """Return ``path`` relative to the repository when it is inside it."""
    return (
        str(path.relative_to(REPO_ROOT))
        if path.is_relative_to(REPO_ROOT)
        else str(path)
    )


# Server settings -------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_config() -> dict:
    return tomllib.loads(CONFIG_TOML.read_text(encoding="utf-8"))["server"]


def test_config_listens_on_loopback(server_config):
    assert server_config["address"] == "127.0.0.1"


def test_config_keeps_xsrf_protection(server_config):
    assert server_config["enableXsrfProtection"] is True
    # Streamlit turns XSRF protection off when CORS protection is off.
    assert server_config.get("enableCORS", True) is True


def test_config_limits_upload_size(server_config):
    limit = server_config["maxUploadSize"]

    assert isinstance(limit, int)
    assert 1 <= limit <= STREAMLIT_DEFAULT_UPLOAD_MB


def listening_addresses(port: int) -> list[str]:
    """Return the hex local addresses of the sockets listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A is TCP_LISTEN
                found.append(address)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_server_listens_only_on_loopback(tmp_path):
    """A server started with no address option listens on loopback alone."""
    server = StreamlitServer(tmp_path / "models", tmp_path / "server.log", address=None)
    server.start()
    try:
        addresses = listening_addresses(server.port)
    finally:
        server.stop()

    assert addresses, f"nothing listens on port {server.port}"
    assert set(addresses) <= LOOPBACK_HEX, addresses


# No unpickling -----------------------------------------------------------------------


class MarkerPayload:
    """Unpickling this object creates ``marker``: proof that a loader ran pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (io.open, (self.marker, "w"))


def pickle_bytes(marker: Path, kind: str) -> bytes:
    """Return a raw pickle or torch.save payload that creates ``marker`` when loaded."""
    if kind == "pickle":
        return pickle.dumps(MarkerPayload(marker))
    buffer = io.BytesIO()
    torch.save(MarkerPayload(marker), buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_crafted_payload_is_armed(tmp_path, kind):
    """The payload below does run when unpickled, so its rejection means something."""
    marker = tmp_path / "payload-ran"
    data = pickle_bytes(marker, kind)

    if kind == "pickle":
        pickle.loads(data)
    else:
        torch.load(io.BytesIO(data), weights_only=False)

    assert marker.exists()


@pytest.fixture(params=["pickle", "torch.save"])
def crafted_run(request, tmp_path, models_dir):
    """A run whose weights and checkpoint files are pickles that create a marker."""
    marker = tmp_path / "payload-ran"
    run = create_run(TrainConfig(epochs=2, embedding_dim=8, memory_size=4), "crafted")
    data = pickle_bytes(marker, request.param)
    (run.path / WEIGHTS_FILE).write_bytes(data)
    (run.path / CHECKPOINT_FILE).write_bytes(data)
    return run, marker


def test_crafted_weights_rejected_by_load_model(crafted_run):
    run, marker = crafted_run

    with pytest.raises(ValueError, match="not a readable safetensors file"):
        run.load_model()
    assert not marker.exists()


def test_crafted_weights_rejected_by_load_run(crafted_run):
    run, marker = crafted_run

    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_run(run.path)
    assert not marker.exists()


def test_crafted_checkpoint_has_no_epoch(crafted_run):
    run, marker = crafted_run

    assert run.checkpoint_epoch() is None
    assert not marker.exists()


def test_crafted_checkpoint_rejected_by_restore(crafted_run, split):
    run, marker = crafted_run
    trainer = Trainer(TrainConfig(embedding_dim=8, memory_size=4), split)

    with pytest.raises(ValueError, match="not a readable checkpoint"):
        restore_checkpoint(run.path / CHECKPOINT_FILE, trainer)
    assert not marker.exists()


def test_crafted_files_rejected_by_cli(crafted_run, capsys):
    run, marker = crafted_run

    assert cli_main(["evaluate", str(run.path)]) == 2
    assert cli_main(["recommend", str(run.path), "--user", "1"]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err
    assert not marker.exists()


@pytest.mark.slow
def test_crafted_checkpoint_fails_resumed_training(crafted_run):
    """Training resumes from a run's checkpoint, so it must reject a crafted one."""
    run, marker = crafted_run

    with pytest.raises(ValueError, match="not a readable checkpoint"):
        jobs.train_in_foreground(run)
    assert open_run(run.path).status()["state"] == "failed"
    assert not marker.exists()


UNPICKLING_CALLS = {
    "torch.load",
    "joblib.load",
    "pd.read_pickle",
    "pandas.read_pickle",
    "pickle.load",
    "pickle.loads",
    "pickle.Unpickler",
    "cloudpickle.load",
    "cloudpickle.loads",
    "dill.load",
    "dill.loads",
    "shelve.open",
}
NUMPY_LOADS = {"np.load", "numpy.load"}
PICKLE_MODULES = {"pickle", "cloudpickle", "dill", "joblib", "shelve"}


def unpickling_calls(path: Path) -> list[str]:
    """Return ``file:line code`` for each call or import in ``path`` that unpickles."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        else:
            modules = []
        if any(module.split(".")[0] in PICKLE_MODULES for module in modules):
            found.append(f"{relative(path)}:{node.lineno} {ast.unparse(node)}")
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        allow_pickle = [
            ast.unparse(keyword.value)
            for keyword in node.keywords
            if keyword.arg == "allow_pickle"
        ]
        numpy_pickle = name in NUMPY_LOADS and allow_pickle not in ([], ["False"])
        if name in UNPICKLING_CALLS or numpy_pickle:
            found.append(f"{relative(path)}:{node.lineno} {ast.unparse(node)}")
    return found


def test_sources_never_unpickle():
    found = [call for path in APP_SOURCES for call in unpickling_calls(path)]

    assert found == []


def test_unpickling_scan_finds_calls(tmp_path):
    """The scan above flags each form of unpickling call it looks for."""
    source = tmp_path / "sample.py"
    source.write_text(
        "torch.load(path)\n"
        "pickle.loads(data)\n"
        "np.load(path, allow_pickle=True)\n"
        "np.load(path)\n"
        "joblib.load(path)\n"
    )

    lines = [
        int(call.split(" ")[0].rsplit(":")[1]) for call in unpickling_calls(source)
    ]

    assert lines == [1, 2, 3, 5]


# Names from users --------------------------------------------------------------------

ESCAPING_RUN_NAMES = [
    "..",
    ".",
    "../escape",
    "a/../../b",
    "/etc",
    "a/b",
    "a\\b",
    "C:\\runs",
    "~",
    "~root",
    ".hidden",
    "-rf",
    "name\x00.safetensors",
    "name\nsecond line",
    "café",
    "x" * 65,
]


@pytest.mark.parametrize("name", ESCAPING_RUN_NAMES)
def test_run_name_cannot_escape_models_dir(name, models_dir, tmp_path):
    config = TrainConfig(epochs=1, embedding_dim=8, memory_size=4)
    before = sorted(path.name for path in tmp_path.iterdir())

    with pytest.raises(ValueError, match="invalid run name"):
        validate_run_name(name)
    with pytest.raises(ValueError, match="invalid run name"):
        create_run(config, name=name)
    with pytest.raises((ValueError, FileNotFoundError)):
        open_run(name)
    # create_run makes the models folder itself, and nothing else.
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        {*before, models_dir.name}
    )
    assert list(models_dir.iterdir()) == []


UPLOAD_NAMES = {
    "../../etc/passwd.csv": "passwd.csv",
    "..\\..\\windows\\ratings.csv": "ratings.csv",
    "/tmp/ratings.tsv": "ratings.tsv",
    "..csv": "upload.csv",
    ".hidden.csv": "hidden.csv",
    "my ratings (1).csv": "my_ratings_1.csv",
    "a\x00b.parquet": "a_b.parquet",
    "über.CSV": "uber.csv",
}


@pytest.mark.parametrize(("name", "expected"), UPLOAD_NAMES.items())
def test_upload_name_is_reduced_to_base_name(name, expected):
    safe = sanitise_file_name(name)

    assert safe == expected
    assert Path(safe).name == safe
    assert not safe.startswith(".")


@pytest.mark.parametrize("name", ["ratings.csv.sh", "payload.pkl", "ratings", "a/.."])
def test_upload_name_without_data_suffix_rejected(name):
    with pytest.raises(DataError, match="expected a file name ending in"):
        sanitise_file_name(name)


def test_upload_saved_inside_uploads_folder(tmp_path):
    data_dir = tmp_path / "data"
    rows = [
        f"{user},{item},4,{880000000 + user * 10 + item}"
        for user in range(1, 5)
        for item in range(1, 6)
    ]
    content = ("user_id,item_id,rating,timestamp\n" + "\n".join(rows) + "\n").encode()

    saved = save_upload("../../../outside.csv", content, data_dir)

    uploads = (data_dir / "uploads").resolve()
    assert saved.resolve().parent == uploads
    assert saved.name.startswith("outside-")
    assert not (tmp_path / "outside.csv").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data"]


# HTML rendered without escaping -----------------------------------------------------

HTML_CALLS = {"st.html", "st.sidebar.html", "components.html", "html"}


def module_string_constants(tree: ast.Module) -> set[str]:
    """Return the names bound once, at module level, to a string literal."""
    constants = set()
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            constants.add(node.targets[0].id)
    return constants


def unescaped_html_calls(path: Path) -> list[str]:
    """Return the calls in ``path`` that render HTML built from anything but a literal.

    A call renders unescaped HTML when it passes ``unsafe_allow_html=True`` or
    is ``st.html``. Its first argument must be a string literal or a module
    constant bound to one, so that no user text can reach it.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    constants = module_string_constants(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        unsafe = any(
            keyword.arg == "unsafe_allow_html"
            and not (
                isinstance(keyword.value, ast.Constant) and keyword.value.value is False
            )
            for keyword in node.keywords
        )
        if not (unsafe or ast.unparse(node.func) in HTML_CALLS):
            continue
        body = node.args[0] if node.args else None
        literal = isinstance(body, ast.Constant) and isinstance(body.value, str)
        constant = isinstance(body, ast.Name) and body.id in constants
        if not (literal or constant):
            found.append(f"{relative(path)}:{node.lineno} {ast.unparse(node)}")
    return found


def test_unescaped_html_scan_finds_calls(tmp_path):
    """The scan above flags HTML built from variables and passes literals."""
    source = tmp_path / "page.py"
    source.write_text(
        'CSS = "<style>p {color: red}</style>"\n'
        "st.html(CSS)\n"
        'st.markdown("<b>fixed</b>", unsafe_allow_html=True)\n'
        "st.markdown(title, unsafe_allow_html=True)\n"
        'st.html(f"<p>{name}</p>")\n'
        "st.markdown(title)\n"
    )

    lines = [
        int(call.split(" ")[0].rsplit(":")[1]) for call in unescaped_html_calls(source)
    ]

    assert lines == [4, 5]


def test_unescaped_html_renders_only_literals():
    found = [call for path in UI_SOURCES for call in unescaped_html_calls(path)]

    assert found == []


# Browser traffic stays on loopback ----------------------------------------------


@pytest.mark.parametrize(
    ("url", "leaves"),
    [
        ("http://127.0.0.1:8501/recommend?user=1", False),
        ("ws://localhost:8501/_stcore/stream", False),
        ("http://[::1]:8501/", False),
        ("data:image/svg+xml,<svg></svg>", False),
        ("https://fonts.gstatic.com/s/i/hub/default/24px.svg", True),
        ("http://10.0.0.1/", True),
    ],
)
def test_browser_tests_flag_requests_outside_loopback(url, leaves):
    assert leaves_loopback(url) is leaves
