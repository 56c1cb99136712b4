"""The architecture switches, declared once: the model's GPTConfig and the trainer's TrainConfig
both inherit them, so each switch has one name, one type and one default.

The defaults are GPT-2's layout, so GPT-2's weights and runs saved before the switches existed
load unchanged. This module needs no torch: the config is checked before anything heavy loads.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

POS_EMBS = ("learned", "rope")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "relu2")
CHOICES = {"pos_emb": POS_EMBS, "norm": NORMS, "mlp": MLPS}


@dataclass
class Layout:
    pos_emb: str = "learned"  # learned | rope
    norm: str = "layernorm"  # layernorm | rmsnorm
    qk_norm: bool = False  # RMS-normalise queries and keys per head
    mlp: str = "gelu"  # gelu (GPT-2's tanh GELU) | relu2
    tie_embeddings: bool = True  # output head = token embedding
    logit_softcap: float = 0.0  # > 0: logits = cap * tanh(logits / cap)
    zero_init: bool = False  # output projections (and an untied head) start at zero


LAYOUT_KEYS = tuple(f.name for f in fields(Layout))
# what GPT-2's weights need (zero_init only changes how a model starts, so any value fits)
GPT2_LAYOUT = {f.name: f.default for f in fields(Layout) if f.name != "zero_init"}
