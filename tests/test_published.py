"""fm4npp_models.checkpoints.published: a released FM4NPP checkpoint (PP_collision key layout) read safely, mapped, and
computing the published function, checked against an independent float64 implementation written from the published
keys."""

import collections
import math

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from fm4npp_cli.checkpoints import import_checkpoint as import_command  # noqa: E402

from fm4npp_models.checkpoints.importing import import_checkpoint  # noqa: E402
from fm4npp_models.checkpoints.published import (  # noqa: E402
    infer_config,
    paper_size,
    read_checkpoint,
    to_backbone_state,
)
from fm4npp_models.checkpoints.run import RunError, load_state, read_config  # noqa: E402
from fm4npp_models.model.backbone import Backbone, count_parameters  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest.one_thread)


SMALL = {"D": 64, "N": 4, "H": 4, "k": 5, "layers": 2}  # headdim 32: not the default 64, so it must be inferred


def published_shapes(D, N, H, k, layers, d_conv=4):
    """key -> shape of a published MambaGPT backbone as the released files hold them, in registration order."""
    E = 2 * D
    shapes = {"embedder.proj": (1, D), "embedder.embed.projection": (63, D)}
    for i in range(layers):
        shapes.update(
            {
                f"mamba_layers.{i}.{key}": shape
                for key, shape in {
                    "0.weight": (D,),
                    "1.dt_bias": (H,),
                    "1.A_log": (H,),
                    "1.D": (H,),
                    "1.in_proj.weight": (2 * E + H, D),
                    "1.lin_B.weight": (N, D),
                    "1.lin_C.weight": (N, D),
                    "1.conv1d.weight": (E + 2 * N, 1, d_conv),
                    "1.conv1d.bias": (E + 2 * N,),
                    "1.norm.weight": (E,),
                    "1.out_proj.weight": (D, E),
                }.items()
            }
        )
    shapes.update({"output_layer.weight": (3 * k, D), "output_layer.bias": (3 * k,), "norm.weight": (D,)})
    return shapes


def random_published(seed=0, **sizes):
    """A published state dict with random weights of plausible scales (A_log, dt_bias as the published init)."""
    g = torch.Generator().manual_seed(seed)

    def fill(key, shape):
        if key.endswith("A_log"):
            return torch.log(1 + 15 * torch.rand(shape, generator=g))
        if key.endswith("dt_bias"):  # the inverse softplus of dt in [0.01, 0.3]
            return torch.log(torch.expm1(0.01 + 0.29 * torch.rand(shape, generator=g)))
        if key.endswith(("0.weight", "norm.weight", "1.D")):
            return 1 + 0.2 * torch.randn(shape, generator=g)
        if key.endswith("bias"):
            return 0.1 * torch.randn(shape, generator=g)
        if key.startswith("embedder"):
            return torch.randn(shape, generator=g)
        return torch.randn(shape, generator=g) / math.sqrt(shape[-1] if len(shape) == 2 else shape[-1] + 1)

    return {key: fill(key, shape) for key, shape in published_shapes(**sizes).items()}


def save_released(path, state, **extra):
    """torch.save in the released format: model_state with the DDP prefix, beside the training state."""
    optimizer = {"state": {}, "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.95), "weight_decay": 0.1, "params": [0]}]}
    torch.save(
        {
            "model_state": collections.OrderedDict(("module." + k, v) for k, v in state.items()),
            "iters": 7,
            "epoch": 1,
            "optimizer_state_dict": optimizer,
            "scheduler_state_dict": {"base_lrs": [1e-3]},
            **extra,
        },
        path,
    )
    return path


@pytest.fixture
def released(tmp_path):
    state = random_published(**SMALL)
    return save_released(tmp_path / "pp_nerf_test.ckpt", state), state


# --- the published function, written from the published keys alone (float64) -------------------------------------


def nerf(p):
    parts = [p]
    for level in range(10):
        parts += [torch.sin(2.0**level * p), torch.cos(2.0**level * p)]
    return torch.cat(parts, -1)


def rmsnorm(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w


def mixer(u, p):
    """The published Mamba2 mixer as its fused call computes it, with a sequential scan; p(name) -> the tensor."""
    b, length, _ = u.shape
    H, E = p("dt_bias").shape[0], p("out_proj.weight").shape[1]
    z, x, dt = torch.split(u @ p("in_proj.weight").T, [E, E, H], -1)
    xbc = torch.cat([x, u @ p("lin_B.weight").T, u @ p("lin_C.weight").T], -1)  # channels [x, B, C]
    w, kernel = p("conv1d.weight")[:, 0], p("conv1d.weight").shape[-1]
    padded = F.pad(xbc, (0, 0, kernel - 1, 0))  # causal: kernel - 1 zeros before the first step
    conv = sum(padded[:, j : j + length] * w[:, j] for j in range(kernel)) + p("conv1d.bias")
    x, B, C = torch.split(F.silu(conv), [E, (xbc.shape[-1] - E) // 2, (xbc.shape[-1] - E) // 2], -1)
    dt = F.softplus(dt + p("dt_bias"))  # (b, L, H)
    A = -torch.exp(p("A_log"))
    x = x.unflatten(-1, (H, E // H))  # (b, L, H, P)
    state = u.new_zeros(b, H, E // H, B.shape[-1])
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * A)[..., None, None]
        state = decay * state + dt[:, t, :, None, None] * x[:, t, :, :, None] * B[:, t, None, None, :]
        ys.append(torch.einsum("bhpn,bn->bhp", state, C[:, t]) + p("D")[:, None] * x[:, t])
    y = torch.stack(ys, 1).flatten(-2)
    return rmsnorm(y * F.silu(z), p("norm.weight")) @ p("out_proj.weight").T


def published_forward(state, features):
    """(B, S, 4) -> (the head output (B, S, 3k), [z_1 .. z_L]) of the published MambaGPT, in float64."""
    s = {k: v.double() for k, v in state.items()}
    x = features[..., :1] @ s["embedder.proj"] + nerf(features[..., 1:]) @ s["embedder.embed.projection"]
    zs = []
    for i in range(sum(k.endswith(".0.weight") for k in s)):
        z = mixer(rmsnorm(x, s[f"mamba_layers.{i}.0.weight"]), lambda name, i=i: s[f"mamba_layers.{i}.1.{name}"])
        zs.append(z)
        x = x + z
    return rmsnorm(x, s["norm.weight"]) @ s["output_layer.weight"].T + s["output_layer.bias"], zs


def random_features(seed=1, batch=2, length=37):
    g = torch.Generator().manual_seed(seed)
    coords = torch.rand(batch, length, 3, generator=g, dtype=torch.float64)
    return torch.cat([torch.randn(batch, length, 1, generator=g, dtype=torch.float64), coords], -1)


# --- tests -------------------------------------------------------------------------------------------------------


def test_read_checkpoint_strips_the_prefix_and_reports_the_training_state(released):
    path, state = released
    checkpoint = read_checkpoint(path)
    assert list(checkpoint.state) == list(state)
    assert (checkpoint.iters, checkpoint.epoch) == (7, 1)
    torch.save(state, path.with_name("bare.pt"))  # a bare state dict, no prefix
    bare = read_checkpoint(path.with_name("bare.pt"))
    assert list(bare.state) == list(state)
    assert (bare.iters, bare.epoch) == (None, None)


def test_the_imported_backbone_computes_the_published_function(released):
    path, state = released
    model = Backbone.from_published(path).double()
    config = model.config
    assert (config.d_model, config.n_layers, config.d_state, config.headdim, config.expand, config.k) == (
        64,
        2,
        4,
        32,
        2,
        5,
    )
    assert (config.d_conv, config.ngroups, config.chunk_size, config.dropout) == (4, 1, 256, 0.0)
    features = random_features()
    expected, expected_zs = published_forward(state, features)
    with torch.no_grad():
        out, zs = model(features), model.features(features)
    assert out.shape == (2, 37, 15)
    assert (out - expected).abs().max() < 1e-9
    assert len(zs) == len(expected_zs) == 2
    for z, reference in zip(zs, expected_zs, strict=True):
        assert (z - reference).abs().max() < 1e-9
    assert expected.abs().max() > 0.1  # not trivially small


def test_in_proj_is_stacked_z_x_B_C_dt(released):
    _, state = released
    config = infer_config(state)
    ours = to_backbone_state(state, config)
    E, N = 128, 4
    merged = ours["blocks.1.mixer.in_proj.weight"]
    assert merged.shape == (2 * E + 2 * N + 4, 64)
    torch.testing.assert_close(merged[: 2 * E], state["mamba_layers.1.1.in_proj.weight"][: 2 * E])
    torch.testing.assert_close(merged[2 * E : 2 * E + N], state["mamba_layers.1.1.lin_B.weight"])
    torch.testing.assert_close(merged[2 * E + N : 2 * E + 2 * N], state["mamba_layers.1.1.lin_C.weight"])
    torch.testing.assert_close(merged[-4:], state["mamba_layers.1.1.in_proj.weight"][2 * E :])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.update({"mamba_layers.0.1.extra": torch.zeros(1)}), "unknown mamba_layers.0.1.extra"),
        (lambda s: s.pop("mamba_layers.1.1.lin_C.weight"), "missing mamba_layers.1.1.lin_C.weight"),
        (lambda s: s.pop("norm.weight"), "missing norm.weight"),
        (lambda s: s.update({"mamba_layers.3.0.weight": torch.ones(64)}), "missing mamba_layers.2.0.weight"),
        (
            lambda s: s.update({"mamba_layers.1.1.in_proj.weight": torch.zeros(200, 64)}),
            "mamba_layers.1.1.in_proj.weight (200, 64), expected (260, 64) = (2 d_inner + H, D)",
        ),
        (
            lambda s: s.update({"mamba_layers.1.1.conv1d.bias": torch.zeros(130)}),
            "mamba_layers.1.1.conv1d.bias (130,), expected (136,) = (d_inner + 2N,)",
        ),
        (
            lambda s: s.update({"output_layer.weight": torch.zeros(16, 64), "output_layer.bias": torch.zeros(16)}),
            "3k must be a multiple of 3",
        ),
        (lambda s: s.update({"mamba_layers.0.1.dt_bias": torch.zeros(())}), "mamba_layers.0.1.dt_bias has shape ()"),
    ],
)
def test_keys_or_shapes_that_do_not_fit_are_refused_naming_them(tmp_path, change, message):
    state = random_published(**SMALL)
    change(state)
    path = save_released(tmp_path / "bad.ckpt", state)
    with pytest.raises(RunError, match="bad.ckpt") as error:
        Backbone.from_published(path)
    assert message in str(error.value)


def test_many_unknown_keys_are_listed_in_part():
    state = random_published(**SMALL)
    state.update({f"extra.{i}": torch.zeros(1) for i in range(12)})
    with pytest.raises(RunError, match=r"unknown extra\.0, extra\.1, .* and 4 more"):
        infer_config(state)


class Exploit:
    """Unpickling an instance would create a marker file: the loader must never get that far."""

    marker = None

    def __reduce__(self):
        return (open, (str(Exploit.marker), "w"))


@pytest.mark.parametrize("payload", ["exploit", "namespace"])
def test_a_file_that_needs_unpickling_code_is_refused_without_running_it(tmp_path, released, payload):
    import argparse

    path, state = released
    Exploit.marker = tmp_path / "marker"
    value = Exploit() if payload == "exploit" else argparse.Namespace(lr=0.1)
    save_released(path, state, params=value)
    with pytest.raises(RunError, match=r"pp_nerf_test\.ckpt: refused: loading it would need unpickling code"):
        Backbone.from_published(path)
    assert not Exploit.marker.exists()


def test_other_unreadable_files_are_refused(tmp_path):
    path = tmp_path / "garbage.ckpt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(RunError, match="garbage.ckpt: not a PyTorch checkpoint that can be read without unpickling"):
        read_checkpoint(path)
    path.write_bytes(b"hello world")
    with pytest.raises(RunError, match="garbage.ckpt: not a readable PyTorch checkpoint"):
        read_checkpoint(path)
    torch.save({"epoch": 3, "model_state_dict": {}}, path)  # a head checkpoint, not a backbone
    with pytest.raises(RunError, match=r"no 'model_state', so read as a bare state dict\): 'epoch' is of type int"):
        read_checkpoint(path)
    torch.save({"model_state": {"a": torch.ones(1), "b": [1]}}, path)
    with pytest.raises(RunError, match="garbage.ckpt: 'model_state': 'b' is of type list, not a tensor"):
        read_checkpoint(path)
    with pytest.raises(RunError, match="no such file"):
        read_checkpoint(tmp_path / "absent.ckpt")


def test_import_writes_a_run_that_loads_to_the_same_model(tmp_path, released):
    path, _ = released
    summary = import_checkpoint(path, tmp_path / "run")
    assert summary["iters"] == 7
    assert summary["parameters"] == count_parameters(Backbone(infer_config(read_checkpoint(path).state)))
    assert summary["paper_size"] is None
    origin = read_config(tmp_path / "run")["origin"]
    assert origin["published_checkpoint"] == "pp_nerf_test.ckpt"
    assert (origin["iters"], origin["epoch"], len(origin["sha256"])) == (7, 1, 64)
    features = random_features(seed=3).float()
    with torch.no_grad():
        imported, published = Backbone.from_run(tmp_path / "run"), Backbone.from_published(path)
        torch.testing.assert_close(imported(features), published(features), rtol=0, atol=0)


def test_the_command_imports_and_reports_bad_files(tmp_path, released):
    path, _ = released
    result = CliRunner().invoke(import_command, [str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "width 64, 2 layers, d_state 4" in result.output
    assert "k 5" in result.output
    assert (tmp_path / "run" / "model.safetensors").is_file()
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"garbage")
    result = CliRunner().invoke(import_command, [str(bad), "--out", str(tmp_path / "run2")])
    assert result.exit_code == 2
    assert "Error: " in result.output
    assert "bad.ckpt: not a PyTorch checkpoint that can be read without unpickling code" in result.output
    assert not (tmp_path / "run2").exists()


def test_the_released_m3_shapes_give_the_m3_model():
    """pp_nerf_m1_k30.ckpt is the paper's m3: shapes only (meta tensors), the count of the real file."""
    shapes = published_shapes(D=256, N=16, H=8, k=30, layers=12)
    state = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    config = infer_config(state)
    assert (config.d_model, config.n_layers, config.d_state, config.headdim, config.k) == (256, 12, 16, 64, 30)
    with torch.device("meta"):
        model = Backbone(config)
    load_state(model, to_backbone_state(state, config), "m3")  # every key of ours produced, every shape right
    assert count_parameters(model) == 4_923_386
    assert sum(t.numel() for t in state.values()) == 4_923_386
    assert paper_size(config) == "m3"
    assert paper_size(Backbone.of_size("tiny").config) is None
