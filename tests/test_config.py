"""Config loading and validation: each bad key or value ends in one sentence naming it, before
any dataset or checkpoint is looked up, and a refused `atom train` writes nothing."""

from __future__ import annotations

import os
import subprocess

import pytest

from atomlib.cli import main as cli_main
from atomlib.config import ConfigError, TrainConfig, available_configs, load_config, make_config, parse_overrides
from atomlib.training.launch import resolve_config
from conftest import ROOT, atom_cmd


@pytest.mark.parametrize("name", ["cpu", "test", "darklyrics", "enhanced", "finetune"])
def test_shipped_configs_load(name):
    cfg = load_config(name)
    assert isinstance(cfg, TrainConfig) and cfg.name == name
    assert name in available_configs()


def test_extends_inherits_and_overrides():
    base, child = load_config("darklyrics"), load_config("enhanced")
    assert child.n_embd == 768 and child.n_layer == 10  # its own values
    assert child.batch_size == base.batch_size and child.dataset == base.dataset  # inherited


def test_overrides_are_yaml_typed():
    cfg = load_config("test", ["max_iters=500", "compile=true", "learning_rate=3e-4", "dropout=0"])
    assert cfg.max_iters == 500 and cfg.compile is True and cfg.learning_rate == 3e-4 and cfg.dropout == 0.0
    assert load_config("test", {"dropout": 0.2}).dropout == 0.2  # the papermill form


def test_unknown_key_suggests_the_near_one():
    with pytest.raises(ConfigError, match=r"unknown config key 'learning_rat'; did you mean 'learning_rate'\?"):
        load_config("test", ["learning_rat=1e-3"])


@pytest.mark.parametrize("override, match", [
    ("max_iters=lots", r"'max_iters' = 'lots' is not a valid int"),
    ("max_iters=1.5", r"'max_iters' = 1.5 is not a valid int"),
    ("compile=maybe", r"'compile' = 'maybe' is not a valid bool"),
    ("learning_rate=fast", r"'learning_rate' = 'fast' is not a valid float"),
    ("n_embd=130", r"'n_embd' = 130 must be divisible by n_head \(4\); try 128"),
    ("warmup_iters=2000", r"'warmup_iters' = 2000 must be between 0 and max_iters \(1000\)"),
    ("dropout=1.5", r"'dropout' = 1.5 must be in \[0, 1\)"),
    ("min_lr=1", r"'min_lr' = 1.0 must be between 0 and learning_rate"),
    ("device=tpu", r"'device' = 'tpu' is not one of"),
    ("dtype=float8", r"'dtype' = 'float8' is not one of"),
    ("batch_size=0", r"'batch_size' = 0 must be a positive integer"),
    ("optimizer=sgd", r"'optimizer' = 'sgd' is not one of: adamw, muon"),
    ("pos_emb=alibi", r"'pos_emb' = 'alibi' is not one of: learned, rope"),
    ("norm=batchnorm", r"'norm' = 'batchnorm' is not one of: layernorm, rmsnorm"),
    ("mlp=swiglu", r"'mlp' = 'swiglu' is not one of: gelu, relu2"),
    ("matrix_lr=0", r"'matrix_lr' = 0.0 must be positive"),
    ("head_lr=-1", r"'head_lr' = -1.0 must be positive"),
    ("logit_softcap=-3", r"'logit_softcap' = -3.0 must be >= 0"),
    ("muon_momentum=1", r"'muon_momentum' = 1.0 must be in \[0, 1\)"),
    ("qk_norm=perhaps", r"'qk_norm' = 'perhaps' is not a valid bool"),
])
def test_bad_values_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_config("test", [override])
    assert "\n" not in str(e.value)


def test_switches_that_gpt2_weights_cannot_fit_are_refused():
    with pytest.raises(ConfigError, match=r"'pos_emb' = 'rope' does not fit init_from=gpt2: GPT-2's weights need "
                                          r"pos_emb='learned'"):
        load_config("finetune", ["pos_emb=rope"])
    with pytest.raises(ConfigError, match=r"'n_embd' = 12 must give heads of even size for rope"):
        load_config("test", ["pos_emb=rope", "n_embd=12", "n_head=4"])
    assert load_config("finetune", ["optimizer=muon"]).optimizer == "muon"  # the optimizer is free


def test_block_size_above_gpt2_context():
    with pytest.raises(ConfigError, match=r"'block_size' = 2048 is above the 1024 tokens gpt2 was trained with"):
        load_config("finetune", ["block_size=2048"])
    assert load_config("finetune", ["block_size=256"]).block_size == 256


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match=r"override 'max_iters' is not key=value"):
        parse_overrides(["max_iters"])


def test_missing_config_lists_the_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"no config named 'nope'; choose one of: .*cpu"):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("n_layer: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(bad)


def test_state_json_config_round_trips():
    cfg = load_config("cpu", ["max_iters=7", "warmup_iters=0"])
    assert make_config(cfg.to_dict()) == cfg


def test_short_runs_shrink_warmup_and_eval_interval():
    base = load_config("cpu")
    m = base.warmup_iters - 10  # shorter than the cpu config's warmup (and its eval interval)
    cfg = resolve_config("cpu", [f"max_iters={m}"])
    assert (cfg.max_iters, cfg.warmup_iters, cfg.eval_interval) == (m, m // 10, m)
    # ...unless the user set them too: then the contradiction is theirs to fix
    with pytest.raises(ConfigError, match="warmup_iters"):
        resolve_config("cpu", [f"max_iters={m}", f"warmup_iters={m + 1}"])


def test_override_keys_checked_before_the_checkpoint(tmp_path):
    # the run folder does not exist, but the misspelt key is what gets reported
    with pytest.raises(ConfigError, match="did you mean 'max_iters'"):
        resolve_config(None, ["max_iter=5"], from_run=tmp_path / "no-such-run")


def _refused(args, tmp_path, home=None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if home is not None:
        env["ATOM_HOME"] = str(home)
    r = subprocess.run(atom_cmd("train", *args), capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("atom train: error: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def test_cli_config_errors_exit_2_and_write_nothing(tmp_path, capsys):
    # ATOM_HOME makes the default run folder land in tmp_path/home/outputs; configs come from the repo
    home = tmp_path / "home"
    home.mkdir()
    (home / "configs").symlink_to(ROOT / "configs")
    line = _refused(["--config", "test", "--set", "n_embd=130"], tmp_path, home)
    assert "'n_embd' = 130 must be divisible by n_head (4)" in line
    out = tmp_path / "run"
    line = _refused(["--config", "test", "--set", "dataset=no-such-dataset", "--out", out], tmp_path, home)
    assert "dataset 'no-such-dataset' is missing" in line
    # the same entry point in this process, for the other kinds of mistake
    for argv, expected in ((["--set", "lerning_rate=1"], "did you mean 'learning_rate'"),
                           (["--set", "max_iters"], "not key=value"),
                           (["--config", "nope"], "no config named 'nope'"),
                           (["--set", "warmup_iters=5000"], "'warmup_iters' = 5000 must be between 0 and max_iters"),
                           (["--resume", tmp_path / "run", "--set", "max_iter=3"], "did you mean 'max_iters'")):
        assert cli_main(["train", *map(str, argv), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("atom train: error: ") and expected in err[0], err
    assert not out.exists() and not (home / "outputs").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]
