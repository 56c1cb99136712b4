"""The project's set-up files agree with each other and with DESIGN.md's layout."""

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib

import yaml

from conftest import ROOT, atom_cmd

# conda-forge names that differ from PyPI's
CONDA_TO_PYPI = {"pytorch": "torch"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pyproject_deps(*extras: str) -> set[str]:
    """The runtime dependencies, plus those of the named extras (the project itself left out)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return {_name(d) for d in reqs} - {"atom-gpt"}


def imported_distributions(sources=None) -> dict[str, set[str]]:
    """Every third-party distribution the sources import -> the files that import them.
    sources: (name, Python text) pairs; default: every module of atomlib."""
    if sources is None:
        sources = [(p.name, p.read_text()) for p in (ROOT / "atomlib").rglob("*.py")]
    dists = importlib.metadata.packages_distributions()
    out: dict[str, set[str]] = {}
    for name, text in sources:
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for top in {m.split(".")[0] for m in mods} - set(sys.stdlib_module_names) - {"atomlib"}:
                for dist in dists.get(top, [top.replace("_", "-")]):
                    out.setdefault(_name(dist), set()).add(name)
    return out


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
    """The conda environment is a developer's: runtime plus the notebooks, serve and dev extras."""
    assert conda_deps() == pyproject_deps("notebooks", "serve", "dev")


def test_runtime_dependencies_are_exactly_what_atomlib_imports():
    """Nothing in the runtime list that atomlib does not import, and every import declared
    (optional ones in their extra); test tools live in the dev extra only."""
    imported = imported_distributions()
    runtime = pyproject_deps()
    undeclared = {d: sorted(f) for d, f in imported.items() if d not in runtime | pyproject_deps("embed", "wandb", "serve")}
    assert not undeclared, f"imported by atomlib but not a dependency: {undeclared}"
    assert not runtime - set(imported), f"runtime dependencies atomlib never imports: {sorted(runtime - set(imported))}"
    assert {"pytest", "nbval", "hypothesis", "playwright", "pexpect"} <= pyproject_deps("dev") - pyproject_deps()
    assert {"jupyterlab", "papermill"} <= pyproject_deps("notebooks") - pyproject_deps()


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
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        assert not any(c.get("outputs") for c in cells), nb.name
        assert sum("parameters" in c.get("metadata", {}).get("tags", []) for c in cells) == 1, nb.name


def test_the_notebooks_extra_installs_what_the_notebooks_import():
    """`make demo` installs runtime + notebooks only: every package a notebook imports must be there."""
    cells = [(nb.name, "".join(c["source"])) for nb in sorted((ROOT / "notebooks").glob("*.ipynb"))
             for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    imported = imported_distributions(cells)
    missing = {d: sorted(f) for d, f in imported.items() if d not in pyproject_deps("notebooks", "serve")}
    assert not missing, f"imported by a notebook but not installed by make demo: {missing}"


def test_the_cli_module_loads_no_torch():
    """cli.py's reason for importing the torch stages inside their handlers: `atom --help`, usage
    errors and the data commands answer without loading torch."""
    code = "import sys, atomlib.cli; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
