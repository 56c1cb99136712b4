"""OpenAI's GPT-2 weights into the GPT (GPT-2 layout), from a local folder, the hub cache or the hub.

GPT.from_pretrained takes three steps: load Hugging Face's GPT2LMHeadModel (`load_hf_gpt2`), read
its shape (`gpt2_shape`), copy its weights into a GPT of that shape (`copy_gpt2_weights`). Module
names match GPT2LMHeadModel's, so weights load by name; HF's Conv1D layers store (in, out) and are
transposed into nn.Linear's (out, in). Offline, loading fails at once with one sentence instead
of retrying a download. This module never imports the model's, so the model imports it at the top.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import torch

from atomlib.errors import AtomError

TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def gpt2_shape(hf_config) -> dict:
    """GPTConfig's arguments for the shape of a Hugging Face GPT2Config (GPT-2's layout, biases on)."""
    return dict(block_size=hf_config.n_positions, vocab_size=hf_config.vocab_size, n_layer=hf_config.n_layer,
                n_head=hf_config.n_head, n_embd=hf_config.n_embd, bias=True)


def copy_gpt2_weights(model, hf_state: dict, name_or_folder) -> None:
    """Copy a GPT2LMHeadModel's state dict into model (a GPT of the same shape), by name; HF's
    Conv1D weights are transposed on the way. A missing or misshapen weight is one clear error."""
    sd = model.state_dict()
    keys = [k for k in hf_state if not k.endswith((".attn.bias", ".attn.masked_bias"))]  # HF's mask buffers
    missing = set(sd) - set(keys)
    if missing:
        raise AtomError(f"{name_or_folder} is not a GPT-2 checkpoint (missing {sorted(missing)[0]}).")
    with torch.no_grad():
        for k in keys:
            w = hf_state[k].t() if k.endswith(TRANSPOSED) else hf_state[k]
            if w.shape != sd[k].shape:
                raise AtomError(f"{name_or_folder}: weight {k} has shape {tuple(w.shape)}, expected {tuple(sd[k].shape)}.")
            sd[k].copy_(w)


def load_hf_gpt2(name_or_folder):
    """A transformers GPT2LMHeadModel from a local folder, the local hub cache, or the hub, or one clear error."""
    from transformers import GPT2LMHeadModel  # lazy: transformers takes seconds to import; only GPT-2 weights need it
    from transformers.utils import logging as hf_logging  # lazy: as above

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
