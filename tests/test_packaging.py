"""The project's set-up files agree with each other and with DESIGN.md's layout."""

import re
import subprocess
import tomllib

import yaml

from conftest import ROOT, atom_cmd

# conda-forge names that differ from PyPI's
CONDA_TO_PYPI = {"pytorch": "torch"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pyproject_deps() -> set[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {_name(d) for d in data["project"]["dependencies"]}


def conda_deps() -> set[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            names |= {_name(d) for d in dep.get("pip", [])}
        else:
            names.add(_name(dep))
    names -= {"python", "pip"}
    return {CONDA_TO_PYPI.get(n, n) for n in names}


def test_environment_yml_lists_the_same_packages_as_pyproject():
    assert conda_deps() == pyproject_deps()


def test_required_packages_are_declared():
    need = {"torch", "numpy", "tiktoken", "transformers", "jupyterlab", "ipywidgets", "matplotlib", "pandas",
            "papermill", "nbval", "pyyaml", "safetensors", "tqdm", "requests", "beautifulsoup4", "pytest", "tokenizers"}
    assert need <= pyproject_deps()


def test_layout_matches_design():
    for d in ("notebooks", "atomlib", "configs", "data", "outputs", "tests"):
        assert (ROOT / d).is_dir(), d
    for f in ("environment.yml", "README.md", "pyproject.toml", "Makefile", ".ci/run"):
        assert (ROOT / f).is_file(), f
    for name in ("test", "darklyrics", "enhanced", "finetune", "cpu"):
        assert (ROOT / "configs" / f"{name}.yaml").is_file(), name


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in (ROOT / ".ci/run").read_text()


def test_torch_is_pinned_for_cpu_setup():
    # A loose torch requirement would pull a CUDA build on a CPU machine; the Makefile pins it first.
    assert re.search(r"TORCH_SPEC\s*\?=\s*torch==\d", (ROOT / "Makefile").read_text())


def test_console_script_is_installed():
    out = subprocess.run(atom_cmd("--help"), capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ("fetch", "scrape", "clean", "prepare", "train", "sample", "eval", "chat", "bench", "race"):
        assert cmd in out.stdout


def test_committed_notebooks_carry_no_outputs():
    import json

    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        assert not any(c.get("outputs") for c in cells), nb.name
        assert sum("parameters" in c.get("metadata", {}).get("tags", []) for c in cells) == 1, nb.name
