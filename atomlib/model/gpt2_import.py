"""OpenAI's GPT-2 weights into the GPT (GPT-2 layout), from a local folder, the hub cache or the hub.

Module names match Hugging Face's GPT2LMHeadModel, so weights load by name; HF's Conv1D layers
store (in, out) and are transposed into nn.Linear's (out, in). Offline, loading fails in
seconds with one sentence instead of retrying a download for half a minute.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import torch

from atomlib.errors import AtomError

TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def load_gpt2(cls, name_or_folder, override_args: dict | None = None):
    """A `cls` (GPT) in GPT-2's layout holding the weights of name_or_folder; only dropout may be overridden."""
    from atomlib.model.gpt import GPTConfig

    override_args = override_args or {}
    assert all(k == "dropout" for k in override_args), "only dropout can be overridden"
    hf = load_hf_gpt2(name_or_folder)
    hc = hf.config
    config = GPTConfig(block_size=hc.n_positions, vocab_size=hc.vocab_size, n_layer=hc.n_layer,
                       n_head=hc.n_head, n_embd=hc.n_embd, bias=True, dropout=override_args.get("dropout", 0.0))
    model = cls(config)
    sd, sd_hf = model.state_dict(), hf.state_dict()
    keys = [k for k in sd_hf if not k.endswith((".attn.bias", ".attn.masked_bias"))]
    missing = set(sd) - set(keys)
    if missing:
        raise AtomError(f"{name_or_folder} is not a GPT-2 checkpoint (missing {sorted(missing)[0]}).")
    with torch.no_grad():
        for k in keys:
            w = sd_hf[k].t() if k.endswith(TRANSPOSED) else sd_hf[k]
            if w.shape != sd[k].shape:
                raise AtomError(f"{name_or_folder}: weight {k} has shape {tuple(w.shape)}, expected {tuple(sd[k].shape)}.")
            sd[k].copy_(w)
    return model


def load_hf_gpt2(name_or_folder):
    """A transformers GPT2LMHeadModel from a local folder, the local hub cache, or the hub, or one clear error."""
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # its retry warnings would bury our one-line error
    folder = Path(str(name_or_folder)).expanduser()
    try:
        if folder.is_dir():
            return GPT2LMHeadModel.from_pretrained(folder, local_files_only=True)
        try:
            return GPT2LMHeadModel.from_pretrained(str(name_or_folder), local_files_only=True)  # cached
        except OSError:
            pass
        if os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable():
            raise OSError("the Hugging Face hub is unreachable")
        return GPT2LMHeadModel.from_pretrained(str(name_or_folder))
    except Exception as e:  # network errors, missing files, bad folders all end the same way
        raise AtomError(f"could not load GPT-2 weights '{name_or_folder}' ({e.__class__.__name__}: no local folder "
                        "of that name and no copy from the hub); where there is a network, save them with "
                        "GPT2LMHeadModel.from_pretrained(name).save_pretrained(DIR) and use DIR instead.") from None


def _hub_reachable(timeout: float = 3.0) -> bool:
    host = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False
