"""Launching: the config is resolved once and reaches torchrun's workers as data (a JSON file),
the worker's own arguments, the process layout, and the notebook's parameters as overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from atomlib.config import ConfigError
from atomlib.errors import AtomError
from atomlib.notebook import config_overrides, in_project
from atomlib.paths import project_root
from atomlib.training import launch as launch_mod
from atomlib.training.launch import Layout, launch, main, read_config_file, resolve_config, write_config_file

TINY = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 4, "eval_iters": 2,
        "max_iters": 4, "eval_interval": 2, "gradient_accumulation_steps": 2, "device": "cpu", "dtype": "float32"}


def test_the_workers_get_the_resolved_config_as_a_file_not_as_set_strings(tiny_dataset, tmp_path, monkeypatch):
    seen = {}

    def fake_stream(cmd, env, inherit):  # stands in for torchrun: what would each worker read?
        path = cmd[cmd.index("--config-file") + 1]
        seen.update(cmd=cmd, path=path, cfg=read_config_file(path))
        return 0

    monkeypatch.setattr(launch_mod, "_stream", fake_stream)
    overrides = {**TINY, "dataset": str(tiny_dataset), "dropout": 0.25}
    out = launch("test", overrides, out_dir=tmp_path / "run", nproc=2, progress=False)
    cmd = seen["cmd"]
    assert out == tmp_path / "run"
    assert "--set" not in cmd and "--config" not in cmd  # nothing re-serialised
    assert cmd[cmd.index("-m", cmd.index("torch.distributed.run")) + 1] == "atomlib.training.launch"
    assert "--nproc_per_node=2" in cmd and cmd[cmd.index("--out") + 1] == str(tmp_path / "run")
    assert seen["cfg"] == resolve_config("test", overrides) and seen["cfg"].dropout == 0.25
    assert not (tmp_path / "run").exists()  # launch writes nothing into the run folder itself
    assert not Path(seen["path"]).exists()  # the temporary file is gone


def test_a_config_file_round_trips_and_a_bad_one_is_one_sentence(tmp_path):
    cfg = resolve_config("test", ["max_iters=7", "dropout=0.3", "init_from=scratch"])
    assert read_config_file(write_config_file(cfg, tmp_path / "c.json")) == cfg
    (tmp_path / "bad.json").write_text('{"max_iters": 7, "wings": 2}')
    with pytest.raises(ConfigError, match="wings"):
        read_config_file(tmp_path / "bad.json")
    (tmp_path / "half.json").write_text('{"max_iters": ')
    with pytest.raises(AtomError, match="not JSON"):
        read_config_file(tmp_path / "half.json")
    with pytest.raises(AtomError, match="missing"):
        read_config_file(tmp_path / "none.json")


def test_the_worker_takes_a_config_file_or_a_config_with_overrides(tmp_path, capsys):
    path = write_config_file(resolve_config("test"), tmp_path / "c.json")
    with pytest.raises(SystemExit) as e:
        main(["--config-file", str(path), "--set", "max_iters=3", "--out", str(tmp_path / "run")])
    assert e.value.code == 2 and "--config-file is already resolved" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--config-file", str(path), "--config", "test"])  # one source of the config
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["--config-file", str(tmp_path / "none.json"), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.startswith("atom train: error: config file ")
    assert not (tmp_path / "run").exists()


def test_a_layout_outside_the_job_is_refused_before_anything_runs(tmp_path):
    assert Layout(nproc=4, nnodes=2).world_size == 8
    Layout(nproc=1, nnodes=2, node_rank=1).check()
    for bad in (Layout(nproc=0), Layout(nnodes=0), Layout(nnodes=2, node_rank=2), Layout(node_rank=-1)):
        with pytest.raises(AtomError, match="not a valid layout"):
            bad.check()
    with pytest.raises(AtomError, match="not a valid layout"):
        launch("test", out_dir=tmp_path / "run", nproc=2, nnodes=1, node_rank=1)
    args = Layout(nproc=2, nnodes=2, node_rank=1, master_addr="node0").torchrun_args()
    assert args == ["--nproc_per_node=2", "--nnodes=2", "--node_rank=1", "--master_addr=node0", "--master_port=29500"]
    port = int(Layout(nproc=2).torchrun_args()[-1].partition("=")[2])  # one node: a free port
    assert 0 < port < 65536


def test_notebook_parameters_become_overrides():
    assert config_overrides({"dropout": 0.2}, device="cpu", dataset=None, max_iters=40, mlp=None) == \
        {"dropout": 0.2, "device": "cpu", "max_iters": 40}
    assert config_overrides(None, max_iters=None) == {}
    assert config_overrides({"max_iters": 5}, max_iters=9) == {"max_iters": 9}  # a named parameter wins
    assert in_project(None) is None
    assert in_project("outputs/runs/x") == project_root() / "outputs" / "runs" / "x"
