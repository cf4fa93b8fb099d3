"""The pretraining loss against hand-worked cases."""

import pytest

torch = pytest.importorskip("torch")

from fm4npp_models.pretrain import neighbour_loss, own_coordinates_loss  # noqa: E402


def test_neighbour_loss_by_hand():
    # one event, two positions, k = 2; position 1 has only one neighbour
    targets = torch.tensor([[[[1.0, 0, 0], [0, 1, 0]], [[0, 0, 2], [9, 9, 9]]]])
    mask = torch.tensor([[[True, True], [True, False]]])
    prediction = torch.zeros(1, 2, 6)
    # squared distances: 1, 1, 4 (the masked pair is ignored) -> mean 2
    assert neighbour_loss(prediction, targets, mask).item() == pytest.approx(2.0)
    perfect = targets.reshape(1, 2, 6).clone()
    assert neighbour_loss(perfect, targets, mask).item() == pytest.approx(0.0)


def test_events_are_weighted_and_events_without_pairs_do_not_count():
    targets = torch.zeros(3, 1, 1, 3)
    prediction = torch.tensor([[[1.0, 0, 0]], [[2.0, 0, 0]], [[5.0, 0, 0]]])  # squared: 1, 4, (25)
    mask = torch.tensor([[[True]], [[True]], [[False]]])
    assert neighbour_loss(prediction, targets, mask).item() == pytest.approx((1 + 4) / 2)
    weight = torch.tensor([2.0, 0.5, 100.0])
    assert neighbour_loss(prediction, targets, mask, weight).item() == pytest.approx((2 * 1 + 0.5 * 4) / 2)


def test_own_coordinates_baseline():
    features = torch.tensor([[[7.0, 0.1, 0.2, 0.3]]])
    targets = torch.tensor([[[[0.1, 0.2, 0.5], [0.4, 0.2, 0.3]]]])
    mask = torch.ones(1, 1, 2, dtype=torch.bool)
    # squared distances 0.04 and 0.09 -> 0.065
    assert own_coordinates_loss(features, targets, mask).item() == pytest.approx(0.065)
