"""fm4npp_models.model.mup: the μP rules by hand, the param groups, MuAdamW's per-row LR, schedule safety, and the
coordinate check (activations and their updates keep their size across widths under μP, not under SP)."""

import copy
import math

import pytest

torch = pytest.importorskip("torch")

from fm4npp_models.model.backbone import Backbone, BackboneConfig  # noqa: E402
from fm4npp_models.model.mup import MuAdamW, describe, mup_init_, param_groups  # noqa: E402
from fm4npp_models.pretrain import neighbour_loss  # noqa: E402
from fm4npp_models.training.loop import set_lr  # noqa: E402


def _model(width, d_state=None, seed=0, **changes):
    torch.manual_seed(seed)
    state = d_state if d_state is not None else max(4, width // 16)
    return Backbone(BackboneConfig(d_model=width, n_layers=2, d_state=state, headdim=32, chunk_size=32, **changes))


def _rules(model):
    return {row["name"]: row for row in describe(model)}


def _in_proj(rules, label, layer=0):
    return rules[f"blocks.{layer}.mixer.in_proj.weight[{label}]"]


@pytest.mark.parametrize(
    ("width", "d_state", "std_b", "std_c", "lr_b", "lr_c", "hidden"),
    [
        (64, 4, 1 / 4, 1 / 16, 1 / 2, 8.0, 4.0),  # the ladder: m = s = 1/4
        (256, 16, 1 / 4, 1 / 64, 1.0, 1.0, 1.0),  # the base shape
        (128, 32, 1 / 2, 1 / 64, 2 * math.sqrt(2), 1 / math.sqrt(2), 2.0),  # m = 1/2, s = 2
        (128, 8, 1 / 4, 1 / 32, 1 / math.sqrt(2), 2 * math.sqrt(2), 2.0),  # m = 1/2, s = 1/2
    ],
)
def test_the_rules_by_hand(width, d_state, std_b, std_c, lr_b, lr_c, hidden):
    model = mup_init_(_model(width, d_state))
    rules = _rules(model)
    b, c, z = _in_proj(rules, "B"), _in_proj(rules, "C"), _in_proj(rules, "z")
    assert (b["std"], c["std"]) == pytest.approx((std_b, std_c), rel=1e-12)
    assert (b["lr_mult"], c["lr_mult"]) == pytest.approx((lr_b, lr_c), rel=1e-12)
    assert z["std"] == pytest.approx(1 / math.sqrt(width))
    assert z["lr_mult"] == pytest.approx(hidden)
    assert rules["blocks.1.mixer.out_proj.weight"]["std"] == pytest.approx(1 / math.sqrt(2 * width))
    assert (rules["head.weight"]["lr_mult"], rules["head.weight"]["std"]) == (pytest.approx(hidden), 0.0)
    assert (rules["blocks.0.mixer.A_log"]["lr_mult"], rules["blocks.0.mixer.A_log"]["std"]) == (1.0, None)

    # the drawn weights have those stds (row blocks of in_proj), the readout is zero
    weight = model.blocks[0].mixer.in_proj.weight
    for row in (b, c, z):
        drawn = weight[row["rows"][0] : row["rows"][1]].std().item()
        assert drawn == pytest.approx(row["std"], rel=0.1), row["name"]
    assert not model.head.weight.any()

    # the B and C rows' LRs in the optimizer: the hidden group's LR times the row scale
    lr = 1e-3
    (group,) = [g for g in param_groups(model, lr, 0.1) if any(p is weight for p in g["params"])]
    assert group["lr"] == pytest.approx(lr * hidden)
    scales = {start: scale for start, _, scale in group["row_scales"]}
    assert group["lr"] * scales.get(b["rows"][0], 1.0) == pytest.approx(lr * lr_b)
    assert group["lr"] * scales.get(c["rows"][0], 1.0) == pytest.approx(lr * lr_c)


def test_the_ratios_between_two_ladder_widths_are_the_formulas():
    small, large = _rules(_model(64)), _rules(_model(512))  # N_u x8, N_x x8 (4 -> 32)
    ratio = {key: _in_proj(large, key)["std"] / _in_proj(small, key)["std"] for key in ("B", "C")}
    assert ratio == pytest.approx({"B": 1.0, "C": 1 / 8})  # sqrt(N_x/N_u), 1/sqrt(N_x N_u)
    ratio = {key: _in_proj(large, key)["lr_mult"] / _in_proj(small, key)["lr_mult"] for key in ("B", "C", "z")}
    assert ratio == pytest.approx({"B": 8 / math.sqrt(8), "C": 1 / (8 * math.sqrt(8)), "z": 1 / 8})


@pytest.mark.parametrize("trainable_embedding", [False, True])
def test_param_groups_cover_every_trainable_parameter_once(trainable_embedding):
    model = _model(64, trainable_embedding=trainable_embedding)
    names = {id(p): name for name, p in model.named_parameters()}
    groups = param_groups(model, 1e-3, 0.1)
    listed = [id(p) for g in groups for p in g["params"]]
    assert len(listed) == len(set(listed))
    assert set(listed) == {id(p) for p in model.parameters() if p.requires_grad}
    embedding = {id(p) for p in model.embedding.parameters()}
    assert embedding.isdisjoint(listed) != trainable_embedding
    for g in groups:
        assert g["initial_lr"] == g["lr"] == pytest.approx(1e-3 * g["lr_mult"])
        for p in g["params"]:
            vector = names[id(p)].rsplit(".", 1)[-1] in ("A_log", "D", "dt_bias", "bias") or "norm" in names[id(p)]
            assert (g["weight_decay"] == 0) == (vector or "conv1d" in names[id(p)]), names[id(p)]
            if id(p) in embedding:
                assert g["lr_mult"] == 1.0
    standard = param_groups(model, 1e-3, 0.1, base=None)
    assert {g["lr"] for g in standard} == {1e-3}
    assert not any(g["row_scales"] for g in standard)


def test_a_matrix_without_a_rule_is_refused():
    model = _model(64)
    model.extra = torch.nn.Linear(64, 64)
    with pytest.raises(ValueError, match="no μP rule for the matrix extra.weight"):
        describe(model)


def test_muadamw_moves_the_b_and_c_rows_by_their_scale_times_adamw():
    model = mup_init_(_model(64)).double()
    twin = copy.deepcopy(model)
    mu = MuAdamW(param_groups(model, 1e-2, 0.1))
    plain = torch.optim.AdamW(param_groups(twin, 1e-2, 0.1))  # the same groups: AdamW ignores "row_scales"
    (group,) = [g for g in mu.param_groups if g["row_scales"]]
    (b_start, b_stop, b_scale), (c_start, c_stop, c_scale) = group["row_scales"]  # B and C
    assert (b_scale, c_scale) == pytest.approx((1 / 8, 2))  # (1/2) / 4 and 8 / 4 at width 64
    weight, twin_weight = model.blocks[0].mixer.in_proj.weight, twin.blocks[0].mixer.in_proj.weight
    # the B rows alone, trained by AdamW with the LR lr * scale: what MuAdamW must do to them at every step
    b_rows = torch.nn.Parameter(weight.detach()[b_start:b_stop].clone())
    alone = torch.optim.AdamW([b_rows], lr=group["lr"] * b_scale, weight_decay=0.1)
    generator = torch.Generator().manual_seed(1)
    for step in range(3):
        for p, q in zip(model.parameters(), twin.parameters(), strict=True):
            if p.requires_grad:
                p.grad = torch.randn(p.shape, generator=generator, dtype=p.dtype)
                q.grad = p.grad.clone()
        b_rows.grad = weight.grad[b_start:b_stop].clone()
        old, twin_old = weight.detach().clone(), twin_weight.detach().clone()
        for optimizer in (mu, plain, alone):
            optimizer.step()
        if step == 0:  # from the same weights: the scaled rows move scale times as far, the others the same
            expected = twin_weight.detach() - twin_old
            expected[b_start:b_stop] *= b_scale
            expected[c_start:c_stop] *= c_scale
            torch.testing.assert_close(weight.detach() - old, expected, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(weight.detach()[b_start:b_stop], b_rows.detach(), rtol=1e-12, atol=1e-15)
    in_projs = {id(block.mixer.in_proj.weight) for block in model.blocks}
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        if id(p) not in in_projs:
            torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_a_schedule_step_keeps_the_ratios():
    model = _model(64)
    optimizer = MuAdamW(param_groups(model, 2e-4, 0.01))
    ratios = [g["lr"] / optimizer.param_groups[0]["lr"] for g in optimizer.param_groups]
    assert len(set(ratios)) > 1
    set_lr(optimizer, 0.5)  # what the training loop does every step
    assert [g["lr"] / g["initial_lr"] for g in optimizer.param_groups] == pytest.approx([0.5] * len(ratios))
    assert [g["lr"] / optimizer.param_groups[0]["lr"] for g in optimizer.param_groups] == pytest.approx(ratios)
    # torch's LambdaLR scales each group's initial_lr too
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.1 * (step + 1))
    optimizer.step()
    scheduler.step()
    assert [g["lr"] / g["initial_lr"] for g in optimizer.param_groups] == pytest.approx([0.2] * len(ratios))


# The coordinate check: a few steps of the neighbour loss on one batch at widths 64 .. 512 (d_state = width / 16, as
# on the ladder). Under μP the residual-branch outputs z_l, their change and the change of the prediction keep their
# size across widths; under the standard parameterization (PyTorch's init, one LR) the change grows with width; with
# μP's init but the LR growing with width it grows even more.
WIDTHS = (64, 128, 256, 512)
TOLERANCE = 2.0  # max / min across widths: μP measures <= 1.15 here (seeds 0-2), SP 3-4.8, LR ~ width 15-20


def _batch():
    generator = torch.Generator().manual_seed(123)
    features = torch.cat([torch.randn(2, 64, 1, generator=generator), torch.rand(2, 64, 3, generator=generator)], -1)
    targets = torch.rand(2, 64, 10, 3, generator=generator)
    return features, targets, torch.ones(2, 64, 10, dtype=torch.bool)


def _rms(x):
    return x.pow(2).mean().sqrt().item()


def _coordinates(width, parameterization, lr=1e-3, steps=5):
    """RMS of each z_l after the steps and of its change from init; the same for the prediction (y, dy)."""
    model = _model(width)
    if parameterization == "sp":  # PyTorch's init, one LR
        optimizer = torch.optim.AdamW(param_groups(model, lr, 0.0, base=None))
    elif parameterization == "mup":
        optimizer = MuAdamW(param_groups(mup_init_(model), lr, 0.0))
    else:  # "lr_width": μP's init but one LR growing with width, a wrong scaling that the check must catch
        optimizer = torch.optim.AdamW(param_groups(mup_init_(model), lr * width / 256, 0.0, base=None))
    features, targets, mask = _batch()
    with torch.no_grad():
        z0, y0 = model.features(features), model(features)
    for _ in range(steps):
        optimizer.zero_grad()
        neighbour_loss(model(features), targets, mask).backward()
        optimizer.step()
    with torch.no_grad():
        z1, y1 = model.features(features), model(features)
    dz = [_rms(b - a) for a, b in zip(z0, z1, strict=True)]
    return {"z": [_rms(z) for z in z1], "dz": dz, "y": _rms(y1), "dy": _rms(y1 - y0)}


@pytest.fixture(scope="module")
def coordinates():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: 2-4 s on one thread, and steady when the cores are shared (2: 2-40 s)
    try:
        return {p: [_coordinates(w, p) for w in WIDTHS] for p in ("mup", "sp", "lr_width")}
    finally:
        torch.set_num_threads(threads)


def _spread(rows, key, layer=None):
    values = [row[key] if layer is None else row[key][layer] for row in rows]
    return max(values) / min(values)


def test_mup_keeps_the_coordinates_across_widths(coordinates):
    rows = coordinates["mup"]
    for layer in range(2):
        assert _spread(rows, "z", layer) < TOLERANCE, rows
        assert _spread(rows, "dz", layer) < TOLERANCE, rows
    assert _spread(rows, "dy") < TOLERANCE, rows
    assert min(row["dy"] for row in rows) > 0.1  # the prediction does move


def test_without_mup_the_update_grows_with_width(coordinates):
    mup_spread = _spread(coordinates["mup"], "dy")
    for wrong in ("sp", "lr_width"):
        rows = coordinates[wrong]
        assert rows[0]["dy"] < rows[-1]["dy"], (wrong, rows)
        assert _spread(rows, "dy") > max(TOLERANCE, 2 * mup_spread), (wrong, rows)
        assert _spread(rows, "dz", 0) > TOLERANCE, (wrong, rows)


def test_muadamw_runs_the_optimizer_hooks_once_per_step():
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])  # AdamW.step is hooked too once an AdamW exists
    model = _model(64)  # PyTorch's init: with μP's zero readout the first step would not move in_proj
    optimizer = MuAdamW(param_groups(model, 1e-3, 0.0))
    calls = []
    optimizer.register_step_post_hook(lambda *_: calls.append(model.blocks[0].mixer.in_proj.weight.detach().clone()))
    neighbour_loss(model(_batch()[0]), *_batch()[1:]).backward()
    before = model.blocks[0].mixer.in_proj.weight.detach().clone()
    optimizer.step()
    assert len(calls) == 1
    torch.testing.assert_close(calls[0], model.blocks[0].mixer.in_proj.weight.detach(), rtol=0, atol=0)
    assert not torch.equal(before, calls[0])
