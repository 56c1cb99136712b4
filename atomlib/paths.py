"""Where things live: the project root, data folders, runs, and the offline mirrors; how a file
is written there so that a kill never leaves half of it (atomic_file, write_atomic); and a free
port on 127.0.0.1 for a local server (free_port).

Notebooks run from the repository root or from notebooks/, papermill may run them from
anywhere, so every path is resolved from the project root, never from the working directory.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from atomlib.errors import AtomError

_PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    """The repository root: $ATOM_HOME, else the nearest parent of the working directory
    holding configs/ and atomlib/, else the folder above the installed package."""
    if os.environ.get("ATOM_HOME"):
        return Path(os.environ["ATOM_HOME"]).resolve()
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / "configs").is_dir() and (d / "atomlib").is_dir():
            return d
    return _PACKAGE_DIR.parent


def configs_dir() -> Path:
    return project_root() / "configs"


DATA_STAGES = ("raw", "interim", "processed")


def data_dir(stage: str = "") -> Path:
    """data/ (sources.json, the pinned manifest), or one stage's folder in it, each git-ignored:
    "raw" (as fetched or scraped), "interim" (the cleaned corpus), "processed" (token arrays)."""
    if stage and stage not in DATA_STAGES:
        raise ValueError(f"data stage {stage!r} is not one of {DATA_STAGES}")
    return project_root() / "data" / stage


def outputs_dir(*parts: str) -> Path:
    """outputs/, or a folder in it ("runs", "races", "notebooks"): what the pipeline makes."""
    return project_root().joinpath("outputs", *parts)


def _mirror(env: str, *beside: str) -> Path | None:
    """An offline mirror folder: $env when set, else ../shared/<beside...> next to the repo when it
    exists, else None (then the network is used)."""
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser().resolve()
    guess = project_root().parent.joinpath("shared", *beside)
    return guess if guess.is_dir() else None


def corpus_mirror() -> Path | None:
    """The offline corpus mirror: $ATOM_MIRROR, else ../shared/corpus beside the repo, else None
    (then the real download URLs are used)."""
    return _mirror("ATOM_MIRROR", "corpus")


def tokenizer_mirror() -> Path | None:
    """Folder holding GPT-2's encoder.json and vocab.bpe for offline tiktoken:
    $ATOM_TOKENIZER_MIRROR, else ../shared/tokenizers/gpt2 beside the repo, else None."""
    return _mirror("ATOM_TOKENIZER_MIRROR", "tokenizers", "gpt2")


def newest_run() -> Path | None:
    """The most recently modified run folder under outputs/runs/ that holds a checkpoint."""
    root = outputs_dir("runs")
    if not root.is_dir():
        return None
    runs = [d for d in root.iterdir() if (d / "state.json").is_file()]
    return max(runs, key=lambda d: (d / "state.json").stat().st_mtime, default=None)


def resolve_run(run: str | Path | None = None) -> Path:
    """The run folder a command works on: `run` as given, else the newest under outputs/runs/.

    Every consumer of a trained run (sample, chat, eval, the notebooks, the server) calls this,
    so "which run?" has one answer and one error message."""
    if run:
        return Path(run)
    found = newest_run()
    if found is None:
        raise AtomError(f"no trained run under {outputs_dir('runs')}; train one with `atom train` or pass --run DIR.")
    return found


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """A file to write that replaces `path` whole or not at all: a uniquely named temporary file
    beside it (".tmp-..."), yielded open in `mode`; when the block ends it is fsynced and renamed
    over `path`, and the folder is fsynced. If the block raises, the temporary file is removed and
    `path` is untouched. So a kill leaves the old file or the whole new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (where the platform has directory handles)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform without directory handles (Windows): the rename is what we have
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def write_atomic(path: str | Path, data: bytes) -> None:
    """Replace path's contents with `data` through atomic_file: the old file or the whole new one."""
    with atomic_file(path) as f:
        f.write(data)


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks (a corpus file need not fit in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it), for a server this process starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
