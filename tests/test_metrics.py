"""The benchmark's metrics: hand-worked cases, a plain-Python reference of the double-majority matching, and
scikit-learn on random labelings."""

import itertools
from collections import Counter

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, adjusted_rand_score, precision_score, recall_score

from fm4npp_data.evaluation import metrics
from fm4npp_data.evaluation.metrics import (
    adjusted_rand_index,
    classification_metrics,
    noise_metrics,
    pid_metrics,
    tracking_metrics,
)
from fm4npp_data.labels import PID_CLASSES

# One event: track 4 (4 spacepoints), track 9 (4), two noise spacepoints of two different particles (ids 2 and 3),
# and one spacepoint without truth (-1, not noise), which no figure may see.
TRUTH = np.array([4, 4, 4, 4, 9, 9, 9, 9, 2, 3, -1])
NOISE = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0], bool)
PERFECT = np.array([0, 0, 0, 0, 1, 1, 1, 1, 7, 7, 5])  # noise together: one cluster


def track(predicted, truth=TRUTH, noise=NOISE, event=None, **kw):
    event = np.zeros(len(truth), np.int64) if event is None else event
    return tracking_metrics(event, truth, noise, np.asarray(predicted), **kw)


def figures(result):
    keys = ("ari", "ari_event_mean", "efficiency", "purity", "spacepoint_efficiency", "spacepoint_purity")
    return {k: result[k] for k in keys}


def assert_all_one(result):
    assert figures(result) == pytest.approx(dict.fromkeys(figures(result), 1.0))


# ------------------------------------------------------------------------------------------------------------
# Hand-worked cases
# ------------------------------------------------------------------------------------------------------------


def test_a_perfect_prediction_scores_one_everywhere():
    result = track(PERFECT)
    assert_all_one(result)
    c = result["counts"]
    assert (c["events"], c["spacepoints"], c["left_out"], c["noise_spacepoints"]) == (1, 10, 1, 2)
    assert (c["true_tracks"], c["predicted_tracks"], c["matched_tracks"]) == (2, 2, 2)  # noise is no track


def test_labels_are_arbitrary_and_swapping_two_tracks_changes_nothing():
    swapped = np.array([1, 1, 1, 1, 0, 0, 0, 0, 7, 7, 5])
    assert_all_one(track(swapped))
    assert_all_one(track(np.array([-5, -5, -5, -5, 10**15, 10**15, 10**15, 10**15, 3, 3, -1])))


def test_the_spacepoint_without_truth_is_left_out_whatever_it_is_given():
    for label in (0, 1, 7, -1, 99):
        assert_all_one(track(np.r_[PERFECT[:-1], label]))


def test_everything_merged_into_one_cluster():
    # 10 counted spacepoints, truth clusters 4 + 4 + 2: pairs together in truth 6 + 6 + 1 = 13, in the prediction 45
    # (all), in both 13; tn = 0, fp = 32, fn = 0 -> ARI = 2 (13 * 0 - 0 * 32) / (13 * 0 + 45 * 32) = 0.
    result = track(np.zeros(11, int))
    assert result["ari"] == pytest.approx(0.0)
    assert result["ari_event_mean"] == pytest.approx(0.0)
    # one predicted track of 10 (2 noise < half): neither true track holds > 50 % of it
    assert (result["efficiency"], result["purity"]) == (0.0, 0.0)
    assert result["counts"]["predicted_tracks"] == 1
    assert (result["spacepoint_efficiency"], result["spacepoint_purity"]) == (0.0, 0.0)


@pytest.mark.parametrize("predicted", [np.arange(11), np.full(11, -1)], ids=["singletons", "unassigned"])
def test_everything_split_into_singletons_or_left_unassigned(predicted):
    # no predicted pair: tp = 0, fp = 0, fn = 13, tn = 32 -> ARI = 2 (0 - 0) / (13 * 45 + 0) = 0; no predicted track
    result = track(predicted)
    assert result["ari"] == pytest.approx(0.0)
    assert result["efficiency"] == 0.0
    assert result["purity"] is None
    assert result["spacepoint_purity"] is None
    assert result["counts"]["unassigned"] == (10 if predicted[0] == -1 else 0)


def test_unassigned_spacepoints_are_singletons_not_one_cluster():
    # the two noise spacepoints unassigned: as singletons they break the noise pair (ARI < 1); had -1 been one cluster
    # they would have scored 1
    unassigned = np.r_[PERFECT[:8], -1, -1, 5]
    expected = adjusted_rand_score(np.r_[TRUTH[:8], -2, -2], np.r_[PERFECT[:8], 100, 101])
    assert track(unassigned)["ari"] == pytest.approx(expected)
    assert expected < 1


def test_a_track_split_fifty_fifty_is_not_matched():
    truth = np.array([4] * 6 + [9] * 4)
    predicted = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    result = track(predicted, truth, np.zeros(10, bool))
    assert result["counts"]["true_tracks"] == 2
    assert result["counts"]["predicted_tracks"] == 3
    assert result["efficiency"] == pytest.approx(1 / 2)  # only track 9
    assert result["purity"] == pytest.approx(1 / 3)  # only the prediction of track 9
    assert result["spacepoint_efficiency"] == pytest.approx(4 / 10)
    assert result["spacepoint_purity"] == pytest.approx(4 / 10)


def test_a_majority_needs_more_than_half_on_both_sides():
    truth = np.array([4] * 4 + [9] * 4)
    # prediction 0 holds 3 of track 4 (> half of it) and 3 of track 9 (3/6 of itself: not > half) -> no match
    predicted = np.array([0, 0, 0, 1, 0, 0, 0, 1])
    result = track(predicted, truth, np.zeros(8, bool))
    assert result["efficiency"] == 0.0
    assert result["counts"]["predicted_tracks"] == 1


@pytest.mark.parametrize(
    ("noise_labels", "ari"),
    [((7, 7), 1.0), ((7, 8), 768 / 813)],  # hand-worked: tp 12, fn 1, fp 0, tn 32 -> 2 * 12 * 32 / (13 * 33 + 12 * 32)
    ids=["one-cluster", "many"],
)
def test_noise_predicted_as_one_cluster_or_as_many(noise_labels, ari):
    result = track(np.r_[PERFECT[:8], noise_labels, 5])
    assert result["ari"] == pytest.approx(ari)
    assert result["ari"] == pytest.approx(
        adjusted_rand_score(np.r_[TRUTH[:8], -2, -2], np.r_[PERFECT[:8], noise_labels])
    )
    assert (result["efficiency"], result["purity"]) == (1.0, 1.0)  # noise is no track, on either side


def test_noise_inside_a_predicted_track_and_a_mostly_noise_prediction():
    with_noise = track(np.r_[PERFECT[:8], 0, 0, 5])  # both noise spacepoints join track 4's prediction (2 of 6)
    assert (with_noise["efficiency"], with_noise["purity"]) == (1.0, 1.0)
    assert with_noise["spacepoint_purity"] == pytest.approx(8 / 10)
    truth = np.array([4, 4, 4, 4, 1, 2, 3, 6])
    noise = np.array([0, 0, 0, 0, 1, 1, 1, 0], bool)
    half_noise = track(np.array([0, 0, 0, 0, 1, 1, 1, 1]), truth, noise)  # prediction 1: 3 noise of 4
    assert half_noise["counts"]["predicted_tracks"] == 1
    assert half_noise["purity"] == 1.0


def test_labels_are_per_event_and_degenerate_events_score_one():
    # two events, each with tracks labelled 0 and 1 in truth and prediction: four clusters, not two
    event = np.repeat([0, 1], 6)
    truth = np.tile([0, 0, 0, 1, 1, 1], 2)
    result = track(truth, truth, np.zeros(12, bool), event)
    assert_all_one(result)
    assert result["counts"]["true_tracks"] == 4
    merged = track(np.zeros(12, int), truth, np.zeros(12, bool), event)  # one label for both events: still per event
    assert merged["ari"] == pytest.approx(adjusted_rand_score(truth + 2 * event, event))
    # event 0: one truth cluster predicted as one (1); event 1: one spacepoint (1); event 2 (index 5): merged, ARI 0
    event = np.array([0, 0, 0, 1, 5, 5, 5, 5])
    truth = np.array([3, 3, 3, 8, 1, 1, 2, 2])
    result = track(np.array([6, 6, 6, 0, 0, 0, 0, 0]), truth, np.zeros(8, bool), event)
    assert result["ari_event_mean"] == pytest.approx((1 + 1 + 0) / 3)
    assert result["counts"]["events"] == 3  # events 2, 3 and 4 do not exist: no counted spacepoints


def test_thresholds_are_configurable():
    truth = np.array([4, 4, 9, 9, 9])
    assert track(truth, truth, np.zeros(5, bool))["counts"]["true_tracks"] == 1
    result = track(truth, truth, np.zeros(5, bool), min_true_spacepoints=2, min_predicted_spacepoints=2)
    assert result["counts"]["true_tracks"] == 2
    assert result["counts"]["predicted_tracks"] == 2


def test_efficiency_in_pt_bins_and_on_the_sphenix_subset():
    # five true tracks of 20 spacepoints: pT 0.1, 0.15 (bin 0), 1.5 (bin 7), 2.5 (bin 12), 5 (no bin); the last two
    # are found; |eta| 0.5 except the 2.5 GeV/c one (1.5); tracks 0.1 and 2.5 are matched, the others split in four
    pts = np.array([0.1, 0.15, 1.5, 2.5, 5.0])
    etas = np.array([0.5, 0.5, 0.5, 1.5, 0.5])
    truth = np.repeat(np.arange(5), 20)
    found = np.isin(truth, [0, 3])
    predicted = np.where(found, truth, 100 + np.arange(100) // 5)
    result = track(predicted, truth, np.zeros(100, bool), pt=pts[truth], eta=etas[truth])
    bins = result["efficiency_pt"]
    assert len(bins["edges"]) == 16
    assert bins["edges"][0] == 0
    assert bins["edges"][-1] == 3
    assert bins["true_tracks"][0] == 2
    assert bins["matched"][0] == 1
    assert bins["efficiency"][0] == 0.5
    assert bins["error"][0] == pytest.approx(np.sqrt(0.5 * 0.5 / 2))
    assert (bins["true_tracks"][7], bins["matched"][7], bins["efficiency"][7], bins["error"][7]) == (1, 0, 0.0, 0.0)
    assert (bins["true_tracks"][12], bins["efficiency"][12]) == (1, 1.0)
    assert sum(bins["true_tracks"]) == 4
    assert bins["efficiency"][1] is None
    assert bins["error"][1] is None
    # subset: >= 20 spacepoints, pT > 1, |eta| < 1.1 -> the 1.5 and 5 GeV/c tracks, neither found
    assert result["sphenix"]["true_tracks"] == 2
    assert result["sphenix"]["efficiency"] == 0.0
    assert "efficiency_pt" not in track(PERFECT)
    assert "sphenix" not in track(PERFECT)


def test_mismatched_lengths_and_negative_events_are_errors():
    with pytest.raises(ValueError, match="lengths differ"):
        tracking_metrics(np.zeros(3, int), np.zeros(3, int), np.zeros(2, bool), np.zeros(3, int))
    with pytest.raises(ValueError, match="event indices"):
        tracking_metrics(np.array([-1]), np.zeros(1, int), np.zeros(1, bool), np.zeros(1, int))


def test_an_empty_split_has_no_figures():
    result = tracking_metrics(*(np.zeros(0, int),) * 2, np.zeros(0, bool), np.zeros(0, int))
    assert figures(result) == dict.fromkeys(figures(result))
    assert result["counts"]["events"] == 0


# ------------------------------------------------------------------------------------------------------------
# Random labelings against scikit-learn and a plain-Python reference
# ------------------------------------------------------------------------------------------------------------


def random_split(rng, n_events=12, max_spacepoints=40):
    sizes = rng.integers(0, max_spacepoints, n_events)
    event = np.repeat(np.arange(n_events), sizes)
    n = event.size
    truth = rng.integers(-1, rng.integers(1, 8), n)
    noise = rng.random(n) < 0.15
    truth[noise] = rng.integers(20, 30, noise.sum())  # noise particles have ids too
    predicted = np.where(rng.random(n) < 0.7, truth, rng.integers(-1, 6, n))
    return event, truth, noise, predicted


def reference(event, truth, noise, predicted):
    """The rules in plain Python: clusters as dicts, one spacepoint at a time."""
    counted = [
        (e, "noise" if z else t, p) for e, t, z, p in zip(event, truth, noise, predicted, strict=True) if t >= 0 or z
    ]
    t_size = Counter((e, t) for e, t, _ in counted)
    p_size = Counter((e, p) for e, _, p in counted if p != -1)
    p_noise = Counter((e, p) for e, t, p in counted if p != -1 and t == "noise")
    cells = Counter((e, t, p) for e, t, p in counted if p != -1)
    true_tracks = {k for k, n in t_size.items() if k[1] != "noise" and n >= 3}
    pred_tracks = {k for k, n in p_size.items() if n >= 3 and p_noise[k] < 0.5 * n}
    candidates = [(e, t, p, n) for (e, t, p), n in cells.items() if (e, t) in true_tracks and (e, p) in pred_tracks]
    matches = [(e, t, p, n) for e, t, p, n in candidates if 2 * n > t_size[e, t] and 2 * n > p_size[e, p]]
    shared = sum(m[3] for m in matches)
    return {
        "efficiency": len(matches) / len(true_tracks),
        "purity": len(matches) / len(pred_tracks),
        "spacepoint_efficiency": shared / sum(t_size[k] for k in true_tracks),
        "spacepoint_purity": shared / sum(p_size[k] for k in pred_tracks),
    }


def sklearn_labels(event, truth, noise, predicted):
    """Labels unique over the split for scikit-learn: (event, cluster) pairs, each -1 a singleton."""
    counted = (truth >= 0) | noise
    t = [(e, -2 if z else x) for e, x, z in zip(event[counted], truth[counted], noise[counted], strict=True)]
    singles = itertools.count()
    p = [
        (e, x) if x != -1 else ("single", next(singles))
        for e, x in zip(event[counted], predicted[counted], strict=True)
    ]
    return [hash(x) for x in t], [hash(x) for x in p], event[counted]


@pytest.mark.parametrize("seed", range(8))
def test_random_labelings_agree_with_scikit_learn_and_the_reference(seed):
    rng = np.random.default_rng(seed)
    event, truth, noise, predicted = random_split(rng)
    result = tracking_metrics(event, truth, noise, predicted)
    t, p, ev = sklearn_labels(event, truth, noise, predicted)
    assert result["ari"] == pytest.approx(adjusted_rand_score(t, p), abs=1e-12)
    t, p = np.array(t), np.array(p)
    per_event = [adjusted_rand_score(t[ev == e], p[ev == e]) for e in np.unique(ev)]
    assert result["ari_event_mean"] == pytest.approx(np.mean(per_event), abs=1e-12)
    assert result["counts"]["events"] == len(per_event)
    assert {k: result[k] for k in reference(event, truth, noise, predicted)} == pytest.approx(
        reference(event, truth, noise, predicted)
    )


def test_adjusted_rand_index_agrees_with_scikit_learn_also_in_degenerate_cases():
    rng = np.random.default_rng(3)
    cases = [([], []), ([1], [2]), ([1, 1], [3, 3]), ([1, 2, 3], [4, 5, 6]), ([1, 1, 2], [1, 2, 3])]
    cases += [(rng.integers(0, k, n), rng.integers(-1, k, n)) for n, k in ((50, 3), (200, 20), (7, 7), (1000, 40))]
    for a, b in cases:
        assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)


def test_blocks_spacepoint_order_and_huge_labels_do_not_change_the_figures(monkeypatch):
    rng = np.random.default_rng(11)
    event, truth, noise, predicted = random_split(rng, n_events=60, max_spacepoints=80)
    pt, eta = rng.random(event.size) * 3, rng.normal(0, 1, event.size)
    particle = truth + 100 * event  # one momentum per truth particle
    pt, eta = pt[np.unique(particle, return_inverse=True)[1]], eta[np.unique(particle, return_inverse=True)[1]]
    whole = tracking_metrics(event, truth, noise, predicted, pt, eta)
    monkeypatch.setattr(metrics, "_BLOCK", 50)
    assert tracking_metrics(event, truth, noise, predicted, pt, eta) == whole
    monkeypatch.setattr(metrics, "_CELL_LIMIT", 0)  # the contingency table by sorting
    monkeypatch.setattr(metrics, "_DENSE_LIMIT", 0)  # clusters numbered by np.unique
    assert tracking_metrics(event, truth, noise, predicted, pt, eta) == whole
    order = rng.permutation(event.size)
    assert tracking_metrics(event[order], truth[order], noise[order], predicted[order], pt[order], eta[order]) == whole
    huge = np.where(predicted == -1, -1, predicted * 10**17 + 3)
    assert tracking_metrics(event, truth, noise, huge, pt, eta) == whole


# ------------------------------------------------------------------------------------------------------------
# Classification
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_classification_agrees_with_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 500))
    truth = rng.choice(5, n, p=[0.1, 0.6, 0.1, 0.1, 0.1])
    predicted = np.where(rng.random(n) < 0.6, truth, rng.integers(0, 5, n))
    if seed == 1:
        predicted[predicted == 2] = 1  # a class never predicted: precision 0
    if seed == 2:
        truth[truth == 3], predicted[predicted == 3] = 0, 0  # a class absent from both: not in the macro means
    if seed == 3:
        truth[truth == 4] = 1  # a class only predicted: recall 0, in the means (scikit-learn's labels)
    result = pid_metrics(truth, predicted)
    assert result["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    macro = {"average": "macro", "zero_division": 0}
    assert result["macro_recall"] == pytest.approx(recall_score(truth, predicted, **macro))
    assert result["macro_precision"] == pytest.approx(precision_score(truth, predicted, **macro))
    labels = {"labels": range(5), "average": None, "zero_division": 0}
    recall, precision = recall_score(truth, predicted, **labels), precision_score(truth, predicted, **labels)
    for i, name in enumerate(PID_CLASSES):
        absent = not ((truth == i).any() or (predicted == i).any())  # no figure (scikit-learn: 0)
        assert result["per_class"][name]["recall"] == (None if absent else pytest.approx(recall[i]))
        assert result["per_class"][name]["precision"] == (None if absent else pytest.approx(precision[i]))
        assert result["per_class"][name]["support"] == int((truth == i).sum())
        assert result["per_class"][name]["predicted"] == int((predicted == i).sum())
    assert result["spacepoints"] == n


def test_noise_classes_hand_worked():
    truth = np.array([0, 0, 0, 0, 1, 1], bool)
    predicted = np.array([0, 0, 0, 1, 1, 0], bool)
    result = noise_metrics(truth, predicted)
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["per_class"]["signal"] == {"recall": 0.75, "precision": 0.75, "support": 4, "predicted": 4}
    assert result["per_class"]["noise"] == {"recall": 0.5, "precision": 0.5, "support": 2, "predicted": 2}
    assert result["macro_recall"] == pytest.approx(0.625)
    assert result["macro_precision"] == pytest.approx(0.625)
    never = noise_metrics(truth, np.zeros(6, bool))  # noise never predicted: its precision counts 0
    assert never["per_class"]["noise"]["precision"] == 0.0
    assert never["macro_precision"] == pytest.approx((4 / 6 + 0) / 2)


def test_classes_out_of_range_are_errors_and_names_are_optional():
    with pytest.raises(ValueError, match="predicted class 5 is outside 0..4"):
        pid_metrics([0, 1], [0, 5])
    with pytest.raises(ValueError, match="truth class -1"):
        classification_metrics([-1], [0], 3)
    assert set(classification_metrics([0, 2], [0, 2], 3)["per_class"]) == {"0", "1", "2"}
    assert classification_metrics([], [], 2)["accuracy"] is None


# -- found in review: each of these failed before its fix -------------------------------------------------------


def test_pt_bins_are_closed_on_the_right_as_the_published_evaluation():
    from fm4npp_data.evaluation.metrics import tracking_metrics

    event = np.repeat(np.arange(3), 3)
    track = np.repeat([1, 2, 3], 3)
    result = tracking_metrics(event, track, np.zeros(9, bool), track, pt=np.repeat([0.0, 0.2, 3.0], 3), eta=np.zeros(9))
    counts = result["efficiency_pt"]["true_tracks"]
    assert counts[0] == 2  # 0 and 0.2: the first bin is [0, 0.2]
    assert counts[-1] == 1  # 3.0 is in the last bin, (2.8, 3.0]
    assert sum(counts) == 3


def test_large_and_sparse_event_indices():
    from fm4npp_data.evaluation.metrics import cluster_ids, tracking_metrics

    event = np.array([1, 1, 1, 2**40, 2**40, 2**40])
    track = np.array([3, 3, 3, 4, 4, 4])
    result = tracking_metrics(event, track, np.zeros(6, bool), track)
    assert result["ari"] == 1.0
    assert result["efficiency"] == 1.0
    ids, cluster_event = cluster_ids(np.array([2**62, 0, 0]), np.array([0, 1, 5]))
    assert len(set(ids.tolist())) == 3
    assert sorted(cluster_event.tolist()) == [0, 0, 2**62]


def test_a_class_in_neither_truth_nor_prediction_has_no_recall_or_precision():
    from fm4npp_data.evaluation.metrics import noise_metrics

    result = noise_metrics(np.array([True, True]), np.array([True, True]))
    assert result["per_class"]["signal"]["recall"] is None
    assert result["per_class"]["signal"]["precision"] is None
    assert result["per_class"]["noise"]["recall"] == 1.0
    assert result["macro_recall"] == 1.0
