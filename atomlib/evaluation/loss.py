"""Language modelling: how well a run predicts its dataset's held-out text.

The mean next-token cross-entropy over non-overlapping block_size windows of the val split
(every val token once, batched; or `max_batches` batches of windows spread evenly over the
split), its perplexity, and bits per character, bpc = nats per token / ln 2 / characters per
token, which compares char and BPE runs. Also here: which dataset a run was trained on, and
its splits decoded back to text (the baselines and the copy check read them).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from atomlib.data.prepare import load_meta, load_tokens, resolve_dataset
from atomlib.device import autocast, pick_dtype
from atomlib.errors import AtomError
from atomlib.evaluation.char_ngrams import bits_per_char
from atomlib.model.kernels import bf16_weights

# --- the dataset behind a run ----------------------------------------------------------------


def run_dataset(state: dict) -> Path:
    """The dataset folder a run was trained on (state["dataset"], else its config's dataset)."""
    candidates = [state.get("dataset"), (state.get("config") or {}).get("dataset")]
    for c in candidates:
        if c and (Path(c) / "meta.json").is_file():
            return resolve_dataset(c)
    name = next((c for c in candidates if c), None)
    if name is None:
        raise AtomError("the run's state.json names no dataset; it cannot be evaluated.")
    return resolve_dataset(name)  # raises AtomError naming the missing file


def run_meta(state: dict) -> tuple[Path, dict]:
    """The run's dataset folder and its meta.json, checked to describe the run's own vocabulary."""
    data_dir = run_dataset(state)
    meta = load_meta(data_dir)
    tok = state["tokenizer"]
    if meta.get("tokenizer") != tok.get("tokenizer") or meta.get("vocab_size") != tok.get("vocab_size"):
        raise AtomError(f"{data_dir / 'meta.json'} describes a {meta.get('tokenizer')} vocabulary of "
                        f"{meta.get('vocab_size')} tokens, but the run was trained on "
                        f"{tok.get('tokenizer')} with {tok.get('vocab_size')}; re-prepare the run's dataset.")
    return data_dir, meta


def split_text(folder, split: str, tokenizer) -> str:
    """The text of a split, decoded from its .bin (fast path for character vocabularies)."""
    tokens = load_tokens(folder, split)
    if getattr(tokenizer, "kind", None) == "char":
        codes = np.array([ord(c) for c in tokenizer.chars], dtype=np.uint32)
        ids = np.asarray(tokens, dtype=np.int64)
        ids = ids[(ids >= 0) & (ids < len(codes))]
        return codes[ids].tobytes().decode("utf-32-le", "surrogatepass")
    return tokenizer.decode(np.asarray(tokens).tolist())


def split_documents(text: str, separator: str | None) -> list[str]:
    """The non-empty documents of a decoded split, cut at the dataset's doc separator."""
    parts = text.split(separator) if separator else [text]
    return [p.strip() for p in parts if p.strip()]


# --- the loss ----------------------------------------------------------------------------------


def val_windows(n_tokens: int, block_size: int) -> int:
    """How many non-overlapping (input, target) windows of block_size fit in n_tokens."""
    return max(0, (n_tokens - 1) // block_size)


def chars_per_token(meta: dict, val_text: str | None = None, val_tokens: int | None = None) -> float:
    """Characters per token of the val split: meta.json's chars_per_token, else computed."""
    if meta.get("chars_per_token"):
        return float(meta["chars_per_token"])
    if meta.get("val_chars") and meta.get("val_tokens"):
        return meta["val_chars"] / meta["val_tokens"]
    if val_text is not None and val_tokens:
        return len(val_text) / val_tokens
    return 1.0


def window_starts(n_tokens: int, block: int, batch_size: int, max_batches: int | None) -> np.ndarray:
    """Where the scored windows start: all of them, or max_batches batches spread evenly."""
    n_win = val_windows(n_tokens, block)
    if n_win == 0:
        raise AtomError(f"the val split has only {n_tokens} tokens, fewer than one window of {block}; "
                        "use a larger dataset.")
    starts = np.arange(n_win, dtype=np.int64) * block
    if max_batches is not None and max_batches * batch_size < n_win:
        starts = starts[np.unique(np.linspace(0, n_win - 1, max_batches * batch_size).round().astype(np.int64))]
    return starts


def val_loss(model, tokens, block_size: int | None = None, batch_size: int = 32, max_batches: int | None = None,
             precision: str = "auto", progress: bool = True) -> dict:
    """Mean next-token cross-entropy (nats) over non-overlapping block_size windows of tokens.

    All windows (the whole split but its last partial window), or max_batches batches of
    windows spread evenly over the split. precision "auto" autocasts as the trainer does
    (bf16 where the device runs it fast, else float32); the loss itself is float32."""
    block = block_size or model.config.block_size
    starts = window_starts(len(tokens), block, batch_size, max_batches)
    device = next(model.parameters()).device
    dtype = pick_dtype(device, precision)
    total, count = 0.0, 0
    batches = range(0, len(starts), batch_size)
    was_training = model.training
    model.eval()
    with torch.no_grad(), bf16_weights({}):  # bf16: each weight cast once for the whole split
        for b in tqdm(batches, desc="val loss", unit="batch", disable=not progress, leave=False):
            rows = np.stack([np.asarray(tokens[s:s + block + 1], dtype=np.int64) for s in starts[b:b + batch_size]])
            xy = torch.from_numpy(rows).to(device)
            with autocast(device, dtype):
                _, loss = model(xy[:, :-1], xy[:, 1:])
            n = xy[:, 1:].numel()
            total += float(loss) * n
            count += n
    model.train(was_training)
    return {"loss": total / count, "tokens": count, "windows": len(starts), "batches": len(batches),
            "dtype": str(dtype).replace("torch.", "")}


def lm_metrics(loss_nats: float, cpt: float) -> dict:
    """val_loss, perplexity and bpc from a mean loss in nats per token and chars per token."""
    return {"val_loss": loss_nats, "perplexity": math.exp(min(loss_nats, 700.0)),
            "bpc": bits_per_char(loss_nats, cpt), "chars_per_token": cpt}


def measure_lm(model, tokenizer, data_dir: Path, meta: dict, batch_size: int = 32, max_batches: int | None = None,
               precision: str = "auto", progress: bool = True) -> tuple[dict, str, str]:
    """The language-modelling half of eval.json, the decoded val text, and the dtype it ran in."""
    val = load_tokens(data_dir, "val")
    raw = val_loss(model, val, model.config.block_size, batch_size=batch_size, max_batches=max_batches,
                   precision=precision, progress=progress)
    val_text = split_text(data_dir, "val", tokenizer)
    cpt = chars_per_token(meta, val_text, len(val))
    result = {**lm_metrics(raw["loss"], cpt), "val_tokens_scored": raw["tokens"], "val_windows": raw["windows"],
              "val_tokens_total": int(len(val))}
    return result, val_text, raw["dtype"]
