"""fm4npp_models: the embedding, the backbone's structure and sizes, features in the stored order."""

import math

import pytest

torch = pytest.importorskip("torch")

from fm4npp_models.model.backbone import PAPER_PARAMETERS, SIZES, Backbone, count_parameters, size_table  # noqa: E402
from fm4npp_models.model.embedding import AdditiveEmbedding, nerf_encoding  # noqa: E402


def test_nerf_encoding_order_and_values_by_hand():
    p = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64)
    got = nerf_encoding(p)[0]
    assert got.shape == (63,)
    expected = [0.1, 0.2, 0.3]
    for level in range(10):
        f = 2.0**level
        expected += [math.sin(f * 0.1), math.sin(f * 0.2), math.sin(f * 0.3)]
        expected += [math.cos(f * 0.1), math.cos(f * 0.2), math.cos(f * 0.3)]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-15)


def test_additive_embedding_is_the_published_formula_and_frozen_by_default():
    emb = AdditiveEmbedding(8).double()
    assert not emb.energy.requires_grad
    assert not emb.position.requires_grad
    assert {n for n, _ in emb.named_parameters()} == {"energy", "position"}
    features = torch.rand(2, 5, 4, dtype=torch.float64)
    expected = features[..., :1] @ emb.energy + nerf_encoding(features[..., 1:]) @ emb.position
    torch.testing.assert_close(emb(features), expected)
    assert AdditiveEmbedding(8, trainable=True).position.requires_grad


def test_the_m3_size_has_exactly_the_released_checkpoints_parameter_count():
    with torch.device("meta"):
        m3 = Backbone.of_size("m3", k=30)
    assert count_parameters(m3) == 4_923_386  # the released pp_nerf_m1_k30.ckpt (the paper's m3), counted by shape
    assert count_parameters(m3, trainable_only=True) == 4_923_386 - 64 * 256


def test_every_size_is_within_15_percent_of_the_paper():
    rows = {row["name"]: row for row in size_table()}
    for name, paper in PAPER_PARAMETERS.items():
        assert abs(rows[name]["parameters"] - paper) / paper < 0.15, (name, rows[name]["parameters"], paper)
    assert [rows[n]["width"] for n in ("m1", "m2", "m3", "m4", "m5", "m6")] == [64, 128, 256, 512, 1024, 1536]
    assert all(rows[n]["d_state"] == rows[n]["width"] // 16 for n in PAPER_PARAMETERS)
    assert rows["tiny"]["parameters"] < rows["m1"]["parameters"]
    assert set(SIZES) == {"tiny", "m1", "m2", "m3", "m4", "m5", "m6"}


def test_forward_shapes_features_and_the_stored_order():
    torch.manual_seed(0)
    model = Backbone.of_size("tiny").double().eval()
    features = torch.rand(2, 7, 4, dtype=torch.float64)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    out = model(features, mask)
    assert out.shape == (2, 7, 30)
    zs = model.features(features, mask)
    assert len(zs) == 4
    assert all(z.shape == (2, 7, 64) for z in zs)
    # the head reads the residual stream x_L = x_0 + sum z
    x = model.embedding(features) * mask.unsqueeze(-1) + sum(zs)
    torch.testing.assert_close(out, model.head(model.norm_f(x)))
    # stored order: position j holds stored index[j]
    index = torch.tensor([[3, 0, 6, 1, 5, 2, 4], [2, 0, 3, 1, -1, -1, -1]])
    stored = model.features(features, mask, index=index)
    for b in range(2):
        for j in range(7):
            if index[b, j] >= 0:
                torch.testing.assert_close(stored[0][b, index[b, j]], zs[0][b, j])
    assert torch.all(stored[0][1, 4:] == 0)


def test_padding_does_not_change_real_tokens():
    torch.manual_seed(1)
    model = Backbone.of_size("tiny").double().eval()
    real = torch.rand(1, 9, 4, dtype=torch.float64)
    padded = torch.cat([real, 1e3 * torch.rand(1, 5, 4, dtype=torch.float64)], dim=1)
    mask = torch.tensor([[True] * 9 + [False] * 5])
    torch.testing.assert_close(model(padded, mask)[:, :9], model(real), rtol=1e-12, atol=1e-12)


def test_unknown_size_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model size 'm9'; the sizes are tiny, m1"):
        Backbone.of_size("m9")


def test_the_models_command_prints_the_ladder():
    from click.testing import CliRunner
    from fm4npp_cli.main import main

    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0, result.output
    with torch.device("meta"):
        m3 = count_parameters(Backbone.of_size("m3"))
    assert f"{m3:,}" in result.output
    assert "0.34M" in result.output
