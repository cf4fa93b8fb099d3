"""Maximal update parameterization (μP) of the backbone: initial scales and per-tensor learning rates under which the
LR tuned on a small model stays right on the larger ones (the paper tunes 2e-4 on m3 and transfers it up the ladder).

The base shape is the paper's m3: width N_u0 = 256, d_state N_x0 = 16. With N_u = d_model, N_x = d_state (per group)
and the multipliers m = N_u / 256, s = N_x / 16, each tensor gets an init std sigma and an Adam learning rate eta,
given as a multiple of the base LR (the LR at the base shape):

    tensor                                          kind     sigma               eta / base LR    weight decay
    in_proj rows z, x, dt; out_proj                 hidden   1 / sqrt(fan_in)    1 / m            yes
    in_proj rows B (W_B)                            ssm_B    sqrt(N_x / N_u)     s / sqrt(m)      yes
    in_proj rows C (W_C)                            ssm_C    1 / sqrt(N_x N_u)   1 / (s sqrt(m))  yes
    head.weight (the readout, D -> 3k)              readout  0                   1 / m            yes
    biases, norms, conv1d, dt_bias, A_log, D        vector   (module init)       1                no
    embedding e, P (only when trainable)            input    (N(0, 1), kept)     1                yes

B and C follow the paper's μP-SSM (Vankadara et al. 2024): sigma_B ~ sqrt(N_x/N_u), sigma_C ~ 1/sqrt(N_x N_u),
eta_B ~ N_x/sqrt(N_u), eta_C ~ 1/(N_x sqrt(N_u)); the init constants are 1, as in the published code, and the LRs are
anchored at the base shape. Everything else follows standard μP for Adam (Yang et al. 2022, Tensor Programs V):
matrices whose fan-in and fan-out both grow with width are initialized with std 1/sqrt(fan_in) and get LR ~ 1/width;
vector-like tensors (biases, norm weights, the per-head dt_bias, A_log and D, and the depthwise conv1d, whose fan-in is
d_conv at every width) keep their width-independent module init and the base LR; the readout gets LR ~ 1/width and is
initialized to zero (TP V's choice, so the first step moves only the head: the body's gradients are zero until the
head is not); the input embedding (fan-in 1 and 63 at every width) keeps the base LR and is frozen by default anyway.
On the ladder (N_x = N_u / 16, so s = m) this is sigma_B = 1/4 at every width, sigma_C = 4 / N_u, eta_B ~ sqrt(m) and
eta_C ~ m^(-3/2). AdamW's decoupled decay is multiplied by the group's LR, so it scales with it.

Per-row LRs. in_proj packs the rows [z, x, B, C, dt] into one weight (mamba_ssm's layout, kept so that checkpoints
interoperate), and Adam is invariant to the scale of a gradient, so neither a gradient hook nor a param group can give
the B and C rows their own LR. `param_groups` puts in_proj in the hidden group with "row_scales" ((start, stop, scale),
...) and `MuAdamW` multiplies those rows' step by the scale after AdamW's step: Adam's update is elementwise, so this
is exactly AdamW with the LR lr * scale on those rows (the decoupled decay included).

Schedules. Every group carries "initial_lr", its μP LR; a schedule must set group["lr"] = group["initial_lr"] * factor
(fm4npp_models.training.loop.set_lr, which the training loop calls every step; torch's LambdaLR does the same),
which keeps the ratios between groups at every step.

Checked by tests/test_mup.py's coordinate check: 5 AdamW steps of the neighbour loss at widths 64 .. 512 keep the
size of the residual-branch outputs, of their change and of the prediction's change within 1.15x across widths under
μP, against 3-5x under the standard parameterization. At that scale the check is as flat with the standard-μP rules
for the B and C rows, so it tests the parameterization as a whole, not the μP-SSM rules for B and C in particular.

Where the published code differs: it applied μP only in the downstream trainers, whose backbone is frozen, to separate
`lin_B` and `lin_C` modules, with the same init (std sqrt(N/D) and sqrt(1/(D N))) but 4 AdamW groups: A_log at base*D,
lin_B at base*N/sqrt(D), lin_C at base*sqrt(D)/N (not the paper's 1/(N sqrt(D))) and everything else at base, i.e.
no 1/width for the hidden matrices or the readout. Its scheduler (CosineAnnealingWarmupRestarts) then set every
group's LR to one value, erasing the grouping; here nothing writes a group's LR but from its own "initial_lr".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .mamba2 import Mamba2


@dataclass(frozen=True)
class MupBase:
    """The shape the base LR was tuned on: the paper's m3."""

    d_model: int = 256
    d_state: int = 16


BASE = MupBase()


@dataclass(frozen=True)
class Rule:
    """How one tensor, or one row block of in_proj.weight (rows = (start, stop)), is initialized and trained."""

    name: str
    kind: str  # hidden, ssm_B, ssm_C, readout, vector, input or frozen
    shape: tuple[int, ...]
    rows: tuple[int, int] | None
    std: float | None  # the std mup_init_ draws with (0: zeros); None: the module's own init is kept
    lr_mult: float  # the LR as a multiple of the base LR; 0 for frozen tensors
    weight_decay: bool


def _in_proj_rules(name: str, mixer: Mamba2, m: float, s: float, weight: nn.Parameter) -> list[Rule]:
    n_u, n_x = mixer.d_model, mixer.d_state
    gn = mixer.ngroups * n_x
    hidden = (1 / math.sqrt(n_u), 1 / m)
    blocks = [
        ("z", mixer.d_inner, "hidden", *hidden),
        ("x", mixer.d_inner, "hidden", *hidden),
        ("B", gn, "ssm_B", math.sqrt(n_x / n_u), s / math.sqrt(m)),
        ("C", gn, "ssm_C", 1 / math.sqrt(n_x * n_u), 1 / (s * math.sqrt(m))),
        ("dt", mixer.nheads, "hidden", *hidden),
    ]
    rules, start = [], 0
    for label, n_rows, kind, std, lr_mult in blocks:
        shape = (n_rows, weight.shape[1])
        rules.append(Rule(f"{name}[{label}]", kind, shape, (start, start + n_rows), std, lr_mult, True))
        start += n_rows
    if start != weight.shape[0]:
        raise ValueError(f"{name} has {weight.shape[0]} rows, not the {start} of [z, x, B, C, dt]")
    return rules


def _rules(model: nn.Module, base: MupBase) -> list[tuple[nn.Parameter, Rule]]:
    """(parameter, rule) for every parameter of a Backbone, in_proj weights once per row block."""
    m = model.config.d_model / base.d_model
    special: dict[int, tuple[str, Mamba2 | None]] = {id(model.head.weight): ("readout", None)}
    for mixer in (module for module in model.modules() if isinstance(module, Mamba2)):
        special[id(mixer.in_proj.weight)] = ("in_proj", mixer)
        special[id(mixer.out_proj.weight)] = ("hidden", mixer)
    embedding = {id(p) for p in model.embedding.parameters()}
    out = []
    for name, p in model.named_parameters():
        kind, mixer = special.get(id(p), (None, None))
        if not p.requires_grad:
            out.append((p, Rule(name, "frozen", tuple(p.shape), None, None, 0.0, False)))
        elif kind == "in_proj":
            out += [(p, rule) for rule in _in_proj_rules(name, mixer, m, mixer.d_state / base.d_state, p)]
        elif kind == "hidden":
            out.append((p, Rule(name, "hidden", tuple(p.shape), None, 1 / math.sqrt(p.shape[1]), 1 / m, True)))
        elif kind == "readout":
            out.append((p, Rule(name, "readout", tuple(p.shape), None, 0.0, 1 / m, True)))
        elif id(p) in embedding:
            out.append((p, Rule(name, "input", tuple(p.shape), None, None, 1.0, True)))
        elif p.ndim <= 1 or name.endswith("conv1d.weight"):
            out.append((p, Rule(name, "vector", tuple(p.shape), None, None, 1.0, False)))
        else:
            raise ValueError(f"no μP rule for the matrix {name} {tuple(p.shape)}")
    return out


def describe(model: nn.Module, base: MupBase = BASE) -> list[dict]:
    """One dict per tensor (per row block for in_proj): name, kind, shape, rows, std, lr_mult, weight_decay."""
    return [asdict(rule) for _, rule in _rules(model, base)]


@torch.no_grad()
def mup_init_(model: nn.Module, base: MupBase = BASE) -> nn.Module:
    """Re-initialize the matrices of a Backbone in place with the μP stds (normal; the readout zero); returns it."""
    for p, rule in _rules(model, base):
        if rule.std is None:
            continue
        target = p if rule.rows is None else p[rule.rows[0] : rule.rows[1]]
        if rule.std > 0:
            target.normal_(0.0, rule.std)
        else:
            target.zero_()
    return model


def param_groups(model: nn.Module, lr: float, weight_decay: float, base: MupBase | None = BASE) -> list[dict]:
    """AdamW param groups of the trainable parameters, each with its μP "lr" (= "initial_lr") and "lr_mult", the
    weight decay on matrices only, and "row_scales" for in_proj (honoured by MuAdamW). base=None: the standard
    parameterization, the same LR everywhere (the same decay rule, no row scales)."""
    by_param: dict[int, tuple[nn.Parameter, list[Rule]]] = {}
    for p, rule in _rules(model, base or BASE):
        if rule.kind != "frozen":
            by_param.setdefault(id(p), (p, []))[1].append(rule)
    groups: dict[tuple, dict] = {}
    for p, rules in by_param.values():
        mult = 1.0 if base is None else next((r.lr_mult for r in rules if r.kind == "hidden"), rules[0].lr_mult)
        row_scales = () if base is None else tuple((*r.rows, r.lr_mult / mult) for r in rules if r.lr_mult != mult)
        decay = weight_decay if rules[0].weight_decay else 0.0
        key = (mult, decay, row_scales)
        if key not in groups:
            groups[key] = {
                "params": [],
                "lr": lr * mult,
                "initial_lr": lr * mult,
                "lr_mult": mult,
                "weight_decay": decay,
                "row_scales": row_scales,
            }
        groups[key]["params"].append(p)
    return list(groups.values())


class MuAdamW(torch.optim.AdamW):
    """AdamW that honours a group's "row_scales" ((start, stop, scale), ...): rows start:stop of each of the group's
    tensors move scale times AdamW's step, i.e. exactly as with the LR lr * scale on those rows. Done by a step pre-
    and post-hook (registered first, so later post-hooks such as an EMA see the scaled weights)."""

    def __init__(self, params, *args, **kwargs) -> None:
        super().__init__(params, *args, **kwargs)
        self._rows_before: list[tuple[torch.Tensor, int, int, float, torch.Tensor]] = []
        self.register_step_pre_hook(MuAdamW._save_rows)
        self.register_step_post_hook(MuAdamW._scale_rows)

    @torch.no_grad()
    def _save_rows(self, _args, _kwargs) -> None:
        self._rows_before = [
            (p, start, stop, scale, p[start:stop].clone())
            for group in self.param_groups
            for p in group["params"]
            for start, stop, scale in group.get("row_scales", ())
        ]

    @torch.no_grad()
    def _scale_rows(self, _args, _kwargs) -> None:
        for p, start, stop, scale, old in self._rows_before:
            rows = p[start:stop]
            rows.copy_(old + scale * (rows - old))
        self._rows_before = []
