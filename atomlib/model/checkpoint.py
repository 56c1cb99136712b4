"""Checkpoints: safetensors for tensors, JSON for everything else, never a pickle.

A run folder holds the latest checkpoint as three files, plus `best/` for the best
validation loss:

    model.safetensors      weights (tied embedding stored once); metadata: step
    optimizer.safetensors  AdamW moments, one tensor per state entry; metadata: step
    state.json             config, model shape, step, best val loss, RNG, data position, tokenizer

Writes must survive a kill at any instant. Each file is written under a temporary name and
renamed into place, state.json last. Before the first rename the current files are
hard-linked into `.prev/`, so if the process dies between renames the folder still holds
one consistent checkpoint: either the new top-level one or the previous one in `.prev/`.
The loader checks that the three files carry the same step and falls back to `.prev/`, saying
so on stderr. state.json is checked key by key before anything is built from it, so a wrong
type is one line naming the key. (Only one training writes a folder at a time: it holds the
folder's `.lock`, see training/runs.py.)
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import secrets
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from atomlib.data.tokenizer import load_tokenizer
from atomlib.device import pick_device
from atomlib.errors import AtomError
from atomlib.model.gpt import GPT, GPTConfig

FILES = ("model.safetensors", "optimizer.safetensors", "state.json")


# --- writing -------------------------------------------------------------------------------


def save_checkpoint(folder, model, state: dict, optimizer=None) -> None:
    """Atomically write model (+ optimizer) and state.json into folder. state must hold 'step'."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in (*folder.glob("*.tmp"), *folder.glob(".prev/*.tmp")):  # left by a killed save (we hold the lock)
        stale.unlink(missing_ok=True)
    step = str(state["step"])
    tmp = {}
    tmp["model.safetensors"] = _write_tmp(folder / "model.safetensors",
                                          lambda p: save_file(model_tensors(model), p, metadata={"step": step}))
    if optimizer is not None:
        tensors, opt_meta = optimizer_tensors(optimizer)
        state = {**state, "optimizer": opt_meta}
        tmp["optimizer.safetensors"] = _write_tmp(folder / "optimizer.safetensors",
                                                  lambda p: save_file(tensors, p, metadata={"step": step}))
    tmp["state.json"] = _write_tmp(folder / "state.json",
                                   lambda p: Path(p).write_text(json.dumps(state, indent=1), encoding="utf-8"))
    # Keep the current checkpoint reachable under .prev/ until the new one is fully in place. If
    # an earlier save died between renames the top level is mixed: then .prev/ already holds the
    # last consistent checkpoint and must not be overwritten with the mixture.
    prev = folder / ".prev"
    prev.mkdir(exist_ok=True)
    consistent = _top_level_consistent(folder)
    for name in FILES:
        if consistent and (folder / name).exists():
            link_tmp = _tmp_name(prev / name)
            os.link(folder / name, link_tmp)
            os.replace(link_tmp, prev / name)
    _fsync_dir(prev)  # .prev/ must be on disk before the top level changes
    for name in ("model.safetensors", "optimizer.safetensors", "state.json"):  # state.json last: the commit
        if name in tmp:
            os.replace(tmp[name], folder / name)
    _fsync_dir(folder)


def _top_level_consistent(folder: Path) -> bool:
    """True when folder's state.json and tensor files all carry the same step (headers only)."""
    try:
        step = str(json.loads((folder / "state.json").read_text(encoding="utf-8"))["step"])
        for name in ("model.safetensors", "optimizer.safetensors"):
            if (folder / name).exists():
                with safe_open(str(folder / name), framework="pt") as f:
                    if (f.metadata() or {}).get("step") != step:
                        return False
    except (OSError, ValueError, KeyError, TypeError, SafetensorError):
        return False
    return True


def _tmp_name(final: Path) -> Path:
    """A temporary name beside `final` that no other writer uses."""
    return final.with_name(f"{final.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _write_tmp(final: Path, write) -> Path:
    tmp = _tmp_name(final)
    write(str(tmp))
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    return tmp


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _unwrap(model):
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    return getattr(model, "module", model)  # DDP wrapper


def _tied(model) -> bool:
    return getattr(getattr(model, "config", None), "tie_embeddings", True)


def model_tensors(model) -> dict:
    """The state dict, a tied output head stored once (as the token embedding)."""
    model = _unwrap(model)
    sd = model.state_dict()
    if _tied(model):
        sd.pop("lm_head.weight", None)
    return {k: v.detach().contiguous().cpu() for k, v in sd.items()}


def optimizer_tensors(optimizer) -> tuple[dict, dict]:
    """Flatten an optimizer's state into named tensors + a JSON-able description."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"{pid}.{key}"] = val.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{key}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def rng_state() -> dict:
    """Torch RNG states (CPU and CUDA) as base64 text for state.json."""
    out = {"torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}
    if torch.cuda.is_available():
        out["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch"])), dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)
                                      for s in state["cuda"]])


def generator_state(gen: torch.Generator) -> str:
    return base64.b64encode(gen.get_state().numpy().tobytes()).decode()


def set_generator_state(gen: torch.Generator, text: str) -> None:
    gen.set_state(torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8))


# --- reading -------------------------------------------------------------------------------


def load_checkpoint(folder, need_optimizer: bool = False) -> tuple[dict, dict, dict | None]:
    """(state, model tensors, optimizer tensors or None) of the newest consistent checkpoint in folder.

    Falls back to folder/.prev when a kill left the top-level files from different steps.
    Raises AtomError naming the file when nothing loadable is there.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AtomError(f"run folder {folder} does not exist; pick one under outputs/runs/ or train with `atom train`.")
    try:
        return _load_consistent(folder, need_optimizer)
    except AtomError as first:
        if (folder / ".prev" / "state.json").is_file():
            try:
                loaded = _load_consistent(folder / ".prev", need_optimizer)
            except AtomError:
                raise first from None
            print(f"warning: {first} Using the previous checkpoint, {folder / '.prev'} (step {loaded[0]['step']}).",
                  file=sys.stderr)
            return loaded
        raise first


def _load_consistent(folder: Path, need_optimizer: bool):
    state_path = folder / "state.json"
    if not state_path.is_file():
        raise AtomError(f"{state_path} is missing: {folder} holds no checkpoint; train with `atom train` or pick another run.")
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AtomError(f"{state_path} is corrupt ({type(e).__name__}); delete the run or resume from another.") from None
    check_state(state, state_path)
    step = str(state["step"])
    model = _read_tensors(folder / "model.safetensors", step)
    opt = None
    if need_optimizer or (folder / "optimizer.safetensors").exists():
        if need_optimizer or "optimizer" in state:
            opt = _read_tensors(folder / "optimizer.safetensors", step)
    return state, model, opt


# state.json's keys and their JSON types; the first three are required
_STATE_KEYS = {"step": int, "config": dict, "model_config": dict, "tokenizer": dict, "best_val_loss": (float, type(None)),
               "rng": dict, "data": dict, "elapsed_s": float, "tokens": int, "threads": (int, type(None)),
               "optimizer": dict, "dataset_meta": dict}


def _json_type_ok(value, kind) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):  # JSON true/false are not numbers here
        return bool in kinds
    return isinstance(value, kinds) or (float in kinds and isinstance(value, int))


def check_state(state, path) -> None:
    """Raise AtomError naming the first key of a run's state.json that is missing or of the wrong
    type, the model's shape and switches included, so nothing is built from a bad file."""
    def bad(what: str):
        raise AtomError(f"{path}: {what}; the checkpoint is damaged: delete the run or resume from another.")

    if not isinstance(state, dict):
        bad("the file is not a JSON object")
    for key, kind in _STATE_KEYS.items():
        if key not in state:
            if key in ("step", "config", "model_config"):
                bad(f"key '{key}' is missing")
        elif not _json_type_ok(state[key], kind):
            bad(f"key '{key}' is {type(state[key]).__name__}, not {getattr(kind, '__name__', 'a number or null')}")
    if state["step"] < 0:
        bad(f"key 'step' is {state['step']}")
    fields = {f.name: type(f.default) for f in dataclasses.fields(GPTConfig)}
    for key, value in state["model_config"].items():
        if key not in fields:
            bad(f"model_config has an unknown key '{key}'")
        if not _json_type_ok(value, fields[key]):
            bad(f"model_config key '{key}' is {type(value).__name__}, not {fields[key].__name__}")
    for key in ("vocab_size", "n_layer", "n_head", "n_embd", "block_size"):  # the weights' shapes
        if key not in state["model_config"] or state["model_config"][key] < 1:
            bad(f"model_config key '{key}' is missing or not positive")


def _read_tensors(path: Path, step: str) -> dict:
    if not path.is_file():
        raise AtomError(f"{path} is missing; the checkpoint is incomplete.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise AtomError(f"{path} is corrupt or truncated ({type(e).__name__}); delete the run or resume from another.") from None
    if meta.get("step") != step:
        raise AtomError(f"{path} is from step {meta.get('step')} but state.json says step {step}; the checkpoint is inconsistent.")
    return tensors


def restore_model(model, tensors: dict) -> None:
    """Load saved weights into a model built with the same GPTConfig (a tied head is the embedding)."""
    target = _unwrap(model)
    try:
        missing, unexpected = target.load_state_dict(tensors, strict=False)
    except RuntimeError as e:  # a tensor of another shape than state.json's model_config says
        raise AtomError(f"checkpoint does not fit the model its state.json describes ({str(e).splitlines()[-1].strip()}).") from None
    if _tied(target):
        missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise AtomError(f"checkpoint does not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]}).")


def restore_optimizer(optimizer, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for name, val in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = val
    for name, val in meta.get("scalars", {}).items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = val
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def load_run(run_dir, which: str = "best", device: str = "auto"):
    """(model in eval mode, tokenizer, state) of a trained run: its best-val checkpoint when it
    has one (which="best"), else the latest."""
    run_dir = Path(run_dir)
    folder = run_dir / "best" if which == "best" and (run_dir / "best" / "state.json").is_file() else run_dir
    state, tensors, _ = load_checkpoint(folder)
    model = GPT(GPTConfig(**state["model_config"]))
    restore_model(model, tensors)
    model.to(pick_device(device)).eval()
    try:
        tok = load_tokenizer(state["tokenizer"])
    except KeyError:
        raise AtomError(f"{folder / 'state.json'} has no tokenizer entry; the checkpoint is incomplete.") from None
    return model, tok, state
