"""The phi conventions (fm4npp_models.model.phi): the seam phi = +-pi in the targets, the embedding and the loss."""

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fm4npp_data.errors import RunError, TrainError  # noqa: E402
from fm4npp_models.checkpoints.run import backbone_config  # noqa: E402
from fm4npp_models.model import phi  # noqa: E402
from fm4npp_models.model.backbone import Backbone  # noqa: E402
from fm4npp_models.pretrain import (  # noqa: E402
    NeighbourTask,
    event_losses,
    offset_prediction,
    periodic_losses,
    rank_offsets,
)
from fm4npp_models.training.options import PretrainOptions  # noqa: E402


def _random(seed=0, b=3, s=40, k=5):
    g = torch.Generator().manual_seed(seed)
    own = torch.rand(b, s, 3, generator=g)
    neighbours = torch.rand(b, s, k, 3, generator=g)
    return own, neighbours


def test_unwrapped_targets_are_the_nearest_image():
    own, neighbours = _random()
    t = phi.targets(own, neighbours, "unwrapped")
    d = t[..., 1] - own[..., None, 1]
    assert bool((d >= -0.5).all())
    assert bool((d < 0.5).all())
    shift = t[..., 1] - neighbours[..., 1]  # an integer: the same point on the circle
    assert torch.allclose(shift, shift.round(), atol=1e-6)
    assert torch.equal(t[..., 0], neighbours[..., 0])
    assert torch.equal(t[..., 2], neighbours[..., 2])
    # slow reference: the image n in {-1, 0, 1} nearest the own phi'
    o, nb = own.numpy().astype(np.float64), neighbours.numpy().astype(np.float64)
    images = nb[..., 1, None] + np.array([-1.0, 0.0, 1.0])
    best = np.take_along_axis(images, np.abs(images - o[..., None, 1, None]).argmin(-1)[..., None], -1)[..., 0]
    assert np.allclose(t[..., 1].numpy(), best, atol=1e-6)


def test_a_neighbour_across_the_seam():
    own = torch.tensor([[[0.5, 0.995, 0.2]]])
    neighbour = torch.tensor([[[[0.5, 0.003, 0.25]]]])  # 0.008 away on the circle, 0.992 as stored
    assert phi.targets(own, neighbour, "wrapped")[0, 0, 0, 1] == pytest.approx(0.003)
    assert phi.targets(own, neighbour, "unwrapped")[0, 0, 0, 1] == pytest.approx(1.003)
    own_prediction = own.unsqueeze(2)
    assert float(phi.periodic_error(own_prediction, neighbour, "wrapped")) == pytest.approx(0.008**2 + 0.05**2)
    chord = phi.targets(own, neighbour, "circular")[0, 0, 0, 1:3] - phi.coordinates(own, "circular")[0, 0, 1:3]
    # the chord of an angle 2 pi d on a circle of radius 1 / (2 pi): 2 sin(pi d) / (2 pi), ~ d for small d
    assert float(chord.norm()) == pytest.approx(math.sin(math.pi * 0.008) / math.pi, rel=1e-5)
    assert float(chord.norm()) == pytest.approx(0.008, rel=1e-3)


@pytest.mark.parametrize("convention", phi.PHI_CONVENTIONS)
def test_periodic_error_is_zero_for_the_true_targets_and_ignores_the_image(convention):
    own, neighbours = _random(1)
    exact = phi.targets(own, neighbours, convention)
    assert float(phi.periodic_error(exact, neighbours, convention).abs().max()) < 1e-10
    if convention != "circular":
        moved = exact.clone()
        moved[..., 1] += 1.0
        assert torch.allclose(
            phi.periodic_error(moved, neighbours, convention), phi.periodic_error(exact, neighbours, convention)
        )


def test_periodic_error_against_a_slow_reference():
    own, neighbours = _random(2)
    prediction = torch.rand_like(neighbours)
    got = phi.periodic_error(prediction, neighbours, "wrapped").numpy()
    p, n = prediction.numpy().astype(np.float64), neighbours.numpy().astype(np.float64)
    dphi = np.abs(p[..., 1] - n[..., 1])
    dphi = np.minimum(dphi, 1 - dphi)
    want = (p[..., 0] - n[..., 0]) ** 2 + dphi**2 + (p[..., 2] - n[..., 2]) ** 2
    assert np.allclose(got, want, atol=1e-6)


def test_circular_backbone_shapes_and_unknown_convention():
    model = Backbone.of_size("tiny", phi="circular", k=3)
    assert model.head.out_features == 12
    assert tuple(model.embedding.position.shape) == (84, 64)
    assert Backbone.of_size("tiny", k=3).head.out_features == 9
    assert model(torch.rand(2, 7, 4)).shape == (2, 7, 12)
    with pytest.raises(ValueError, match="unknown phi convention 'spiral'"):
        Backbone.of_size("tiny", phi="spiral")
    with pytest.raises(TrainError, match="--phi must be one of"):
        PretrainOptions(phi="spiral").check()


def test_a_config_without_phi_is_the_published_convention(tmp_path):
    fields = Backbone.of_size("tiny").config.as_dict()
    del fields["phi"]
    assert backbone_config({"backbone": fields}, tmp_path / "config.json").phi == "wrapped"
    with pytest.raises(RunError, match=r"config.json: bad backbone values: phi 'helix' \(must be one of 'wrapped'"):
        backbone_config({"backbone": {**fields, "phi": "helix"}}, tmp_path / "config.json")
    with pytest.raises(RunError, match="phi 1"):
        backbone_config({"backbone": json.loads(json.dumps({**fields, "phi": 1}))}, tmp_path / "config.json")


def _batches(seed=3, n=2):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        b, s, k = 2, 30, 4
        features = torch.rand(b, s, 4, generator=g)
        targets = torch.rand(b, s, k, 3, generator=g)
        target_mask = torch.rand(b, s, k, generator=g) > 0.2
        target_mask[1, 20:] = False  # a shorter event
        out.append(
            {
                "features": features,
                "mask": torch.ones(b, s, dtype=torch.bool),
                "targets": targets,
                "target_mask": target_mask,
                "weight": torch.ones(b),
                "run": torch.zeros(b, dtype=torch.long),
                "event": torch.arange(b),
            }
        )
    return out


def test_rank_offsets_against_numpy():
    batches = _batches()
    got = rank_offsets(batches).numpy()
    sums, counts = np.zeros((4, 3)), np.zeros(4)
    for batch in batches:
        f, t, m = batch["features"].numpy(), batch["targets"].numpy(), batch["target_mask"].numpy()
        for b, j, r in zip(*np.nonzero(m), strict=True):
            d = t[b, j, r].astype(np.float64) - f[b, j, 1:4]
            d[1] -= math.floor(d[1] + 0.5)
            sums[r] += d
            counts[r] += 1
    assert np.allclose(got, sums / counts[:, None], atol=1e-6)


def test_validation_reports_every_measure_and_the_offset_prediction_beats_the_own_position():
    batches = _batches()

    class Own(torch.nn.Module):  # predicts every neighbour at the own position: its loss is own_loss
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, features, mask):  # noqa: ARG002 - the backbone's signature
            return features[..., 1:4].repeat(1, 1, 4) + self.p

    val = NeighbourTask("wrapped").validate(Own(), batches)
    assert val["periodic_loss"] == pytest.approx(val["own_loss"], rel=1e-6)
    assert val["offset_loss"] < val["own_loss"]
    # the offset prediction's loss, by hand
    offsets = rank_offsets(batches)
    per_event, events = [], 0
    for batch in batches:
        loss, has = periodic_losses(
            offset_prediction(batch["features"], offsets), batch["targets"], batch["target_mask"], "wrapped"
        )
        per_event.append(float((loss * has).sum()))
        events += int(has.sum())
    assert val["offset_loss"] == pytest.approx(sum(per_event) / events, rel=1e-6)
    assert val["val_events"] == events


def test_the_unwrapped_loss_of_a_seam_pair_is_its_distance():
    features = torch.tensor([[[0.0, 0.5, 0.998, 0.2]]])
    targets = torch.tensor([[[[0.5, 0.001, 0.2]]]])
    mask = torch.ones(1, 1, 1, dtype=torch.bool)
    batch = {"features": features, "targets": targets, "target_mask": mask}
    own = features[..., 1:4]
    wrapped, _ = event_losses(own, phi.targets(own, targets, "wrapped"), mask)
    unwrapped, _ = event_losses(own, NeighbourTask("unwrapped").targets(batch), mask)
    assert float(wrapped) == pytest.approx(0.997**2, rel=1e-5)
    assert float(unwrapped) == pytest.approx(0.003**2, rel=1e-3)
