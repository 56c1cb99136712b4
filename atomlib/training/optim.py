"""Optimizers: nanoGPT's AdamW, or Muon for the hidden matrices with AdamW for the rest.

    optimizer: adamw   every parameter in AdamW at learning_rate; weight decay on matrices
                       and embeddings only (nanoGPT's two groups)
    optimizer: muon    the blocks' 2-D weights in Muon (Jordan et al. 2024: momentum, then the
                       update orthogonalised by Newton-Schulz) at matrix_lr; token/position
                       embeddings at embedding_lr, an untied head at head_lr and the gains and
                       biases at learning_rate, all in AdamW (as modded-nanogpt and nanochat do)

Every group keeps its "kind", and the schedule (`get_lr`: linear warmup, cosine decay) scales
each kind's own peak rate by the same factor (`set_lr`). The two optimizers of the muon setting
act as one (`MuonAdamW`): one step, one zero_grad, one state dict in torch's format, so
checkpoints, exact resume and the grad scaler treat both settings alike.

Muon is torch.optim.Muon's algorithm and state, with its Newton-Schulz iteration batched over
the matrices of one shape (`Muon`). The iteration runs in bf16, as torch's does, except on CPUs
without native bf16 (AVX2 only), which emulate it far slower than float32: there it runs in
float32 (`float32_ns`), so `optimizer: muon` costs those machines little more than AdamW does.
"""

from __future__ import annotations

import inspect
import math

import torch

OPTIMIZERS = ("adamw", "muon")


def _fused(device_type: str) -> dict:
    ok = "fused" in inspect.signature(torch.optim.AdamW).parameters and device_type in ("cuda", "cpu", "mps")
    return {"fused": True} if ok else {}


def adamw(model, learning_rate: float, weight_decay: float, betas, device_type: str) -> torch.optim.AdamW:
    """nanoGPT's optimizer: weight decay on 2-D tensors (matrices, embeddings), none on gains and biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay, "kind": "adamw"},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, "kind": "adamw"}]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **_fused(device_type))


def build_optimizer(model, cfg, device: torch.device, float32_ns: bool = False):
    """The optimizer a TrainConfig asks for (cfg.optimizer), with every group at its peak rate."""
    betas = (cfg.beta1, cfg.beta2)
    if cfg.optimizer == "adamw":
        return adamw(model, cfg.learning_rate, cfg.weight_decay, betas, device.type)
    kinds = model.param_kinds()
    muon = Muon(kinds["matrix"], lr=cfg.matrix_lr, momentum=cfg.muon_momentum, weight_decay=0.0,
                float32_ns=float32_ns)
    muon.param_groups[0]["kind"] = "matrix"
    groups = [{"params": kinds[k], "kind": k, "weight_decay": wd, "lr": peak_lr(cfg, k)}
              for k, wd in (("embedding", cfg.weight_decay), ("head", cfg.weight_decay), ("scalar", 0.0)) if kinds[k]]
    return MuonAdamW(muon, torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=betas, **_fused(device.type)))


def peak_lr(cfg, kind: str) -> float:
    """The peak learning rate of a parameter group's kind."""
    if kind == "matrix":
        return cfg.matrix_lr
    if kind == "embedding" and cfg.embedding_lr is not None:
        return cfg.embedding_lr
    if kind == "head" and cfg.head_lr is not None:
        return cfg.head_lr
    return cfg.learning_rate


def get_lr(step: int, cfg) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup, cosine decay to min_lr, then flat."""
    decay_iters = cfg.max_iters if cfg.lr_decay_iters is None else cfg.lr_decay_iters
    if step < cfg.warmup_iters:
        return cfg.learning_rate * (step + 1) / (cfg.warmup_iters + 1)
    if step >= decay_iters:
        return cfg.min_lr
    ratio = (step - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)


def set_lr(optimizer, cfg, factor: float) -> None:
    """Every group at its kind's peak rate times the schedule's factor (lr(step) / learning_rate)."""
    for group in optimizer.param_groups:
        group["lr"] = peak_lr(cfg, group.get("kind", "adamw")) * factor


class Muon(torch.optim.Muon):
    """torch.optim.Muon (its hyperparameters, its "momentum_buffer" state, its update), with the
    Newton-Schulz iteration batched over all matrices of one shape: a small model's 16 matrices
    come in 3 shapes, so 45 batched products replace 240 small ones (torch's step loops over the
    matrices, and at small sizes each product costs more in call overhead than in arithmetic). The iteration
    runs in bf16, as torch's does, or in float32 with float32_ns (devices that would emulate bf16)."""

    def __init__(self, params, float32_ns: bool = False, **kwargs):
        super().__init__(params, **kwargs)
        self.float32_ns = float32_ns

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            by_shape: dict[tuple, list] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p.grad))
                buf.lerp_(p.grad, 1 - group["momentum"])
                update = p.grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
                wide = update.T if update.size(0) > update.size(1) else update  # iterate on the wide side
                by_shape.setdefault(tuple(wide.shape), []).append((p, wide))
            dtype = torch.float32 if self.float32_ns else torch.bfloat16
            for pairs in by_shape.values():
                ortho = newton_schulz(torch.stack([w.to(dtype) for _, w in pairs]), group["ns_coefficients"],
                                      group["ns_steps"], group["eps"])
                for (p, _), o in zip(pairs, ortho):
                    o = o.T if p.size(0) > p.size(1) else o
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                    # torch's "original" scale: sqrt(max(1, rows / cols))
                    p.add_(o.to(p.dtype), alpha=-group["lr"] * math.sqrt(max(1.0, p.size(0) / p.size(1))))
        return None


def newton_schulz(g: torch.Tensor, coefficients, steps: int, eps: float) -> torch.Tensor:
    """torch.optim.Muon's quintic Newton-Schulz orthogonalisation of each matrix of g (N, rows, cols),
    rows <= cols, in g's dtype: each scaled to unit Frobenius norm, then X <- aX + (bA + cA^2)X, A = XX^T."""
    a, b, c = coefficients
    x = g / g.flatten(1).norm(dim=1).clamp(min=eps).view(-1, 1, 1)
    for _ in range(steps):
        gram = torch.bmm(x, x.mT)
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x


class MuonAdamW:
    """Muon and AdamW stepping together as one optimizer. param_groups lists Muon's, then AdamW's;
    state_dict numbers the parameters in that order, in torch's format."""

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer):
        self.optimizers = (muon, adamw)

    @property
    def param_groups(self) -> list[dict]:
        return [g for opt in self.optimizers for g in opt.param_groups]

    @property
    def state(self) -> dict:
        return {p: s for opt in self.optimizers for p, s in opt.state.items()}

    def step(self, closure=None):
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True):
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        state, groups, offset = {}, [], 0
        for opt in self.optimizers:
            sd = opt.state_dict()
            state.update({offset + i: s for i, s in sd["state"].items()})
            groups += [{**g, "params": [offset + i for i in g["params"]]} for g in sd["param_groups"]]
            offset += sum(len(g["params"]) for g in sd["param_groups"])
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd: dict) -> None:
        offset, start = 0, 0
        for opt in self.optimizers:
            n_groups = len(opt.param_groups)
            groups = sd["param_groups"][start:start + n_groups]
            if len(groups) != n_groups:
                raise ValueError("the saved optimizer state has a different number of parameter groups")
            n = sum(len(g["params"]) for g in groups)
            opt.load_state_dict({
                "state": {i - offset: s for i, s in sd["state"].items() if offset <= i < offset + n},
                "param_groups": [{**g, "params": [i - offset for i in g["params"]]} for g in groups]})
            offset, start = offset + n, start + n_groups
