"""The test session's own project folder, so `make test` never touches the user's work.

Everything atomlib writes goes under paths.project_root(), which $ATOM_HOME moves. Before any
test or notebook runs, this points ATOM_HOME at a fresh temporary project that holds links to
the repository's configs and its data/sources.json manifest, with the offline mirrors beside the
repository passed on explicitly. Notebooks under nbval run in kernels that inherit the variable,
so their smoke runs, datasets and saved chats land there too.

At the end the session checks that the repository's outputs/ and data/ are as they were (every
file's size and modification time) and fails, naming the files, if anything there changed. The
temporary project is kept for an hour, so its runs and the browser test's screenshot can be
looked at; its path is printed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
GUARDED = ("outputs", "data")  # the user's folders: the suite must leave them byte-identical
_state: dict = {}


def _snapshot() -> dict[str, tuple[int, int]]:
    files = {}
    for name in GUARDED:
        for dirpath, _, filenames in os.walk(ROOT / name):
            for f in filenames:
                p = Path(dirpath) / f
                try:
                    st = p.lstat()
                except FileNotFoundError:
                    continue
                files[str(p.relative_to(ROOT))] = (st.st_size, st.st_mtime_ns)
    return files


def _test_home() -> Path:
    """A new temporary project; those of sessions that started over an hour ago are removed (a
    session running beside this one keeps its own)."""
    base = Path(tempfile.gettempdir()) / f"atom-tests-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    base.mkdir(exist_ok=True)
    for old in base.glob("home-*"):
        if time.time() - old.stat().st_mtime > 3600:
            shutil.rmtree(old, ignore_errors=True)
    home = Path(tempfile.mkdtemp(prefix="home-", dir=base))
    (home / "configs").symlink_to(ROOT / "configs")
    (home / "data").mkdir()
    shutil.copy(ROOT / "data" / "sources.json", home / "data" / "sources.json")
    return home


def pytest_configure(config):
    if os.environ.get("ATOM_HOME"):  # the caller chose the project folder already
        return
    for var, guess in (("ATOM_MIRROR", ROOT.parent / "shared" / "corpus"),
                       ("ATOM_TOKENIZER_MIRROR", ROOT.parent / "shared" / "tokenizers" / "gpt2")):
        if not os.environ.get(var) and guess.is_dir():  # what paths.py would find beside the repo
            os.environ[var] = str(guess)
    _state["before"] = _snapshot()
    _state["home"] = _test_home()
    os.environ["ATOM_HOME"] = str(_state["home"])


def pytest_sessionfinish(session, exitstatus):
    if "before" not in _state:
        return
    before, after = _state["before"], _snapshot()
    _state["changed"] = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if _state["changed"]:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    if "changed" not in _state:
        return
    changed = _state["changed"]
    if changed:
        terminalreporter.write_line(f"the suite changed {len(changed)} file(s) in the repository's outputs/ or data/:",
                                    red=True)
        for k in changed[:20]:
            terminalreporter.write_line(f"  {k}")
    terminalreporter.write_line(f"test project (runs, notebook smoke runs, screenshots): {_state['home']}")
