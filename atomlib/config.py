"""Training configuration: one dataclass, loaded by name from configs/<name>.yaml.

Key names follow nanoGPT so its users' habits carry over. A config file may `extends:`
another one and only list what differs. Overrides come as `key=value` strings (CLI
`--set`, papermill) or a dict. Every value is checked here, before any dataset or
checkpoint is looked up, and a bad one fails with one sentence naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from atomlib.errors import AtomError
from atomlib.model.layout import CHOICES as LAYOUT_CHOICES
from atomlib.model.layout import GPT2_LAYOUT, Layout
from atomlib.paths import configs_dir

# GPT-2 checkpoints that init_from accepts by name, with their context length.
GPT2_NAMES = {"gpt2": 1024, "gpt2-medium": 1024, "gpt2-large": 1024, "gpt2-xl": 1024}



class ConfigError(AtomError):
    """A config file, key or value that cannot be used."""


@dataclass
class TrainConfig(Layout):
    """Every training setting; the architecture switches (pos_emb, norm, qk_norm, mlp,
    tie_embeddings, logit_softcap, zero_init) come from model.layout.Layout."""

    # model shape (nanoGPT names)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    block_size: int = 256
    bias: bool = False
    dropout: float = 0.1
    # data: a name under data/processed/ or a folder holding train.bin, val.bin, meta.json
    dataset: str = "darkverse"
    # optimisation
    optimizer: str = "adamw"  # adamw | muon (Muon for the blocks' matrices, AdamW for the rest)
    batch_size: int = 4
    gradient_accumulation_steps: int = 1  # global count, divided among DDP processes
    learning_rate: float = 1e-3  # peak AdamW rate (muon: gains and biases, and embeddings/head unless set)
    min_lr: float = 1e-4  # the schedule ends at min_lr / learning_rate of every group's peak
    matrix_lr: float = 0.02  # muon: peak rate of the blocks' matrices
    embedding_lr: float | None = None  # muon: token/position embeddings (None: learning_rate)
    head_lr: float | None = None  # muon: an untied output head (None: learning_rate)
    muon_momentum: float = 0.95
    max_iters: int = 1000
    warmup_iters: int = 100
    lr_decay_iters: int | None = None  # None: decay until max_iters
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 disables clipping
    # evaluation, logging, checkpoints
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    # system
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    compile: bool = False
    init_from: str = "scratch"  # scratch | gpt2 | gpt2-medium | gpt2-large | gpt2-xl | a save_pretrained folder
    seed: int = 1337
    # optional experiment tracking
    wandb_log: bool = False
    wandb_project: str = "atom-gpt"
    # name of the config this came from (filled in by load_config)
    name: str = "custom"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CHOICES = {
    "device": ("auto", "cpu", "cuda", "mps"),
    "dtype": ("auto", "float32", "bfloat16", "float16"),
    "optimizer": ("adamw", "muon"),
    **LAYOUT_CHOICES,
}
_FIELDS = {f.name: f for f in fields(TrainConfig)}


def available_configs() -> list[str]:
    return sorted(p.stem for p in configs_dir().glob("*.yaml"))


def load_config(name_or_path: str | Path = "cpu", overrides: Iterable[str] | Mapping[str, Any] | None = None) -> TrainConfig:
    """Load configs/<name>.yaml (or a YAML path), apply overrides, validate, return a TrainConfig."""
    values, name = _read_yaml(name_or_path, seen=())
    values.pop("extends", None)
    values.update(parse_overrides(overrides))
    values["name"] = name
    return make_config(values)


def make_config(values: Mapping[str, Any]) -> TrainConfig:
    """Build a TrainConfig from a plain dict (as stored in state.json), checking every key and value."""
    cfg = TrainConfig(**check_overrides(values))
    validate(cfg)
    return cfg


def check_overrides(values: Mapping[str, Any]) -> dict:
    """Check each key's name and each value's type (not yet their combination); return the
    typed values. Lets a caller reject a misspelt key before it reads a dataset or checkpoint."""
    unknown = [k for k in values if k not in _FIELDS]
    if unknown:
        k = unknown[0]
        near = difflib.get_close_matches(k, _FIELDS, n=1)
        hint = f"did you mean '{near[0]}'?" if near else f"valid keys: {', '.join(_FIELDS)}."
        raise ConfigError(f"unknown config key '{k}'; {hint}")
    return {k: _coerce(k, v) for k, v in values.items()}


def parse_overrides(overrides: Iterable[str] | Mapping[str, Any] | None) -> dict:
    """`["lr=3e-4", "compile=true"]` or `{"dropout": 0.2}` -> dict of raw values (YAML-typed)."""
    if not overrides:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    out = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not key=value; write it as e.g. max_iters=500.")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw  # not a YAML scalar ("'", "[1,"): the string as typed, checked like any other
    return out


def validate(cfg: TrainConfig) -> None:
    """Reject impossible or contradictory settings with one sentence naming the key."""
    def bad(key, why):
        raise ConfigError(f"config key '{key}' = {getattr(cfg, key)!r} {why}")

    for key in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "gradient_accumulation_steps",
                "max_iters", "eval_interval", "eval_iters", "log_interval"):
        if getattr(cfg, key) < 1:
            bad(key, "must be a positive integer.")
    if cfg.n_embd % cfg.n_head:
        bad("n_embd", f"must be divisible by n_head ({cfg.n_head}); try {cfg.n_embd - cfg.n_embd % cfg.n_head or cfg.n_head}.")
    if not 0.0 <= cfg.dropout < 1.0:
        bad("dropout", "must be in [0, 1).")
    if cfg.learning_rate <= 0:
        bad("learning_rate", "must be positive.")
    if not 0.0 <= cfg.min_lr <= cfg.learning_rate:
        bad("min_lr", f"must be between 0 and learning_rate ({cfg.learning_rate}).")
    if not 0 <= cfg.warmup_iters <= cfg.max_iters:
        bad("warmup_iters", f"must be between 0 and max_iters ({cfg.max_iters}); a warmup longer than the run never reaches the peak learning rate.")
    if cfg.lr_decay_iters is not None and not cfg.warmup_iters <= cfg.lr_decay_iters:
        bad("lr_decay_iters", f"must be at least warmup_iters ({cfg.warmup_iters}).")
    if cfg.weight_decay < 0:
        bad("weight_decay", "must be >= 0.")
    for key in ("matrix_lr", "embedding_lr", "head_lr"):
        if getattr(cfg, key) is not None and getattr(cfg, key) <= 0:
            bad(key, "must be positive.")
    if cfg.logit_softcap < 0:
        bad("logit_softcap", "must be >= 0 (0 switches it off).")
    if cfg.pos_emb == "rope" and (cfg.n_embd // cfg.n_head) % 2:
        bad("n_embd", f"must give heads of even size for rope (n_embd / n_head = {cfg.n_embd // cfg.n_head}).")
    for key in ("optimizer", "pos_emb", "norm", "mlp"):
        if getattr(cfg, key) not in CHOICES[key]:
            bad(key, f"is not one of: {', '.join(CHOICES[key])}.")
    for key in ("beta1", "beta2", "muon_momentum"):
        if not 0.0 <= getattr(cfg, key) < 1.0:
            bad(key, "must be in [0, 1).")
    if cfg.grad_clip < 0:
        bad("grad_clip", "must be >= 0 (0 disables clipping).")
    device = cfg.device.split(":")[0]
    if device not in CHOICES["device"]:
        bad("device", f"is not one of: {', '.join(CHOICES['device'])} (cuda:N also works).")
    if cfg.dtype not in CHOICES["dtype"]:
        bad("dtype", f"is not one of: {', '.join(CHOICES['dtype'])}.")
    if cfg.init_from != "scratch":  # GPT-2's weights only fit GPT-2's layout
        for key, gpt2 in GPT2_LAYOUT.items():
            if getattr(cfg, key) != gpt2:
                bad(key, f"does not fit init_from={cfg.init_from}: GPT-2's weights need {key}={gpt2!r}.")
    if cfg.init_from in GPT2_NAMES and cfg.block_size > GPT2_NAMES[cfg.init_from]:
        bad("block_size", f"is above the {GPT2_NAMES[cfg.init_from]} tokens {cfg.init_from} was trained with.")
    if cfg.init_from not in ("scratch", *GPT2_NAMES) and not cfg.init_from:
        bad("init_from", f"must be scratch, one of {', '.join(GPT2_NAMES)}, or a folder saved with save_pretrained.")
    if not cfg.dataset:
        bad("dataset", "must name a folder under data/processed/ or a path.")


# --- helpers -------------------------------------------------------------------------------


def _read_yaml(name_or_path, seen) -> tuple[dict, str]:
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = configs_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(f"no config named '{name_or_path}'; choose one of: {', '.join(available_configs())}.")
    elif not path.is_file():
        raise ConfigError(f"config file {path} does not exist.")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML ({str(e).splitlines()[0]}).") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must be a mapping of key: value lines.")
    if "extends" in values:  # a config lists only what differs from its parent
        parent = values["extends"]
        if parent in seen:
            raise ConfigError(f"config file {path} extends '{parent}' in a loop.")
        base, _ = _read_yaml(parent, seen=(*seen, parent))
        base.pop("extends", None)
        base.update(values)
        values = base
    return values, path.stem


def _coerce(key: str, value: Any) -> Any:
    """Check a value against the field's type; accept ints for floats and YAML's 1e-3 strings."""
    f = _FIELDS[key]
    typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    optional = "None" in typ
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key '{key}' needs a value ({typ}).")
    base = typ.replace(" | None", "")
    try:
        if base == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.lower() in ("true", "yes", "1")
            raise ValueError
        if base == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value, 10)
        if base == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if base == "str":
            if not isinstance(value, (str, Path)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key '{key}' = {value!r} is not a valid {base}.") from None
    return value
