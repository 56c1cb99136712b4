"""Small conveniences the notebooks share, so their cells stay narrative plus one call."""

from __future__ import annotations

import os
from pathlib import Path

from atomlib.data.setup import ensure_dataset
from atomlib.paths import newest_run, project_root
from atomlib.training.launch import resolve_config
from atomlib.training.train import run as train_run


def smoke(value, small):
    """`small` when the test suite runs the notebooks (ATOM_SMOKE=1), else `value` unchanged.

    The notebooks' parameters are sized for a person on a laptop (minutes); nbval in CI runs
    the same cells with the work cut down, and this is the one place that decides it."""
    return small if os.environ.get("ATOM_SMOKE") == "1" else value


def ensure_run(run: str | Path | None = None, config: str = "cpu", max_iters: int | None = None) -> Path:
    """The run a notebook should use: `run` if given, else the newest under outputs/runs/; when
    there is none, say so and train a small one (so each notebook runs alone on a fresh clone)."""
    if run:
        return Path(run)
    found = newest_run()
    if found is not None:
        print(f"using the newest run: {found}")
        return found
    iters = max_iters or smoke(300, 60)
    print(f"no run under outputs/runs/ yet: training a small '{config}' run ({iters} steps) first")
    cfg = resolve_config(config, {"max_iters": iters})  # shrinks warmup and eval interval to fit
    ensure_dataset(cfg.dataset)
    return train_run(cfg)


def config_overrides(overrides: dict | None = None, **params) -> dict:
    """The config overrides a notebook's parameters ask for: `overrides`, then every named
    parameter that is not None (None means "the config's own value")."""
    return {**(overrides or {}), **{k: v for k, v in params.items() if v is not None}}


def in_project(path: str | Path | None) -> Path | None:
    """A path the parameters give relative to the repository, wherever the notebook runs from
    (papermill may run it elsewhere); None stays None."""
    return None if path is None else project_root() / path


def runs_to_evaluate(runs) -> list[Path]:
    """Notebook 04's run folders: each of `runs` (relative to the project; one folder may come as a
    string, as papermill passes it), or the newest run, trained first when there is none."""
    if isinstance(runs, (str, Path)):
        runs = [runs]
    return [in_project(r) for r in runs] if runs else [ensure_run()]
