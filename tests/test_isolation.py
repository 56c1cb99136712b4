"""The suite's guard of the user's folders: the repository's conftest.py runs every test in a
temporary project (ATOM_HOME) and fails the session when outputs/ or data/ changed anyway."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

from atomlib import paths


def test_this_session_runs_in_a_temporary_project():
    assert paths.project_root() != ROOT
    assert paths.outputs_dir() != ROOT / "outputs" and paths.data_dir() != ROOT / "data"
    assert (paths.configs_dir() / "cpu.yaml").is_file()  # the repository's configs, linked
    assert (paths.data_dir() / "sources.json").is_file()


def _session(tmp_path: Path, test_body: str) -> subprocess.CompletedProcess:
    """pytest over a copy of the repository's conftest.py in a small fake repository."""
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "outputs").mkdir()
    shutil.copy(ROOT / "conftest.py", repo / "conftest.py")
    shutil.copytree(ROOT / "configs", repo / "configs")
    shutil.copy(ROOT / "data" / "sources.json", repo / "data" / "sources.json")
    (repo / "outputs" / "mine.txt").write_text("the user's file")
    (repo / "test_x.py").write_text("import os\nfrom pathlib import Path\n\n\ndef test_x():\n" + test_body)
    env = {k: v for k, v in os.environ.items() if k != "ATOM_HOME"}
    env["TMPDIR"] = str(tmp_path / "tmp")  # the session's temporary projects land here
    (tmp_path / "tmp").mkdir()
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_x.py"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=120)


def test_a_session_that_writes_into_outputs_fails_and_names_the_file(tmp_path):
    r = _session(tmp_path, "    (Path(__file__).parent / 'outputs' / 'mine.txt').write_text('overwritten!')\n")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "changed 1 file(s)" in r.stdout and "outputs/mine.txt" in r.stdout


def test_a_session_that_writes_through_atom_home_passes(tmp_path):
    r = _session(tmp_path, "    home = Path(os.environ['ATOM_HOME'])\n"
                           "    assert home != Path(__file__).parent\n"
                           "    (home / 'outputs').mkdir()\n"
                           "    (home / 'outputs' / 'run.txt').write_text('a smoke run')\n")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "test project" in r.stdout
    assert (tmp_path / "repo" / "outputs" / "mine.txt").read_text() == "the user's file"
