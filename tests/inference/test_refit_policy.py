"""The warm-or-cold decision every model makes when it is offered a previous fit."""

from __future__ import annotations

import numpy as np
import pytest

from inference.data import CrowdData
from inference.models import MODELS, make_model
from inference.models.conal import CoNAL
from inference.models.ds import DawidSkene
from inference.models.mv import MajorityVote
from inference.synthetic import make_synthetic_crowd

FAST = dict(epochs=6, probe_folds=1, num_threads=1, warm_min_annotations=0)
# Short schedules: the decision is under test, not the fit.
SHORT = {
    "ds": dict(warm_min_annotations=0),
    "conal": FAST,
    "crowding": dict(
        num_threads=1, pretrain_epochs=4, gd_pretrain_epochs=1, crowding_epochs=1, inner_steps=1, warm_min_annotations=0
    ),
}


def _take(data: CrowdData, n: int) -> CrowdData:
    """The first ``n`` annotations (every item and annotator kept)."""
    return CrowdData(
        items=data.items,
        annotators=data.annotators,
        classes=data.classes,
        item_idx=data.item_idx[:n],
        annotator_idx=data.annotator_idx[:n],
        label_idx=data.label_idx[:n],
        features=data.features,
    )


@pytest.fixture(scope="module")
def crowd() -> CrowdData:
    return make_synthetic_crowd(n_items=300, n_test=10, n_annotators=12, n_classes=3, n_features=5, seed=4).data


@pytest.mark.parametrize("name", ["ds", "conal", "crowding"])
def test_warm_within_the_allowed_growth_cold_beyond_it(crowd: CrowdData, name: str) -> None:
    extra = SHORT[name]
    base = _take(crowd, 800)
    first = make_model(name, seed=0, **extra).fit(base)
    assert (first.fit_mode_, first.cold_n_annotations_) == ("cold", 800)
    assert first.fit_reason_ == "no previous fit to start from"
    checkpoint = MODELS[name].loads(first.dumps())
    assert checkpoint.cold_n_annotations_ == 800  # travels with the checkpoint

    # 1.5 % more labels: within the default 2 %, a warm refit that remembers its cold ancestor.
    small = make_model(name, seed=0, **extra).fit(_take(crowd, 812), init=checkpoint)
    assert small.fit_mode_ == "warm" and small.cold_n_annotations_ == 800
    assert "1.5%" in small.fit_reason_ and "800 -> 812" in small.fit_reason_

    # Growth is counted from the chain's COLD fit, not from the previous warm run:
    # 812 -> 824 is 1.5 % over the last run but 3 % over the cold fit.
    chained = make_model(name, seed=0, **extra).fit(_take(crowd, 824), init=MODELS[name].loads(small.dumps()))
    assert chained.fit_mode_ == "cold" and chained.cold_n_annotations_ == 824
    assert "3.0% since the last cold fit (800 -> 824)" in chained.fit_reason_
    assert "up to 2.0%" in chained.fit_reason_

    # The limit is a hyper-parameter: 0 makes every refit cold.
    never = make_model(name, seed=0, warm_max_growth=0.0, **extra).fit(_take(crowd, 801), init=checkpoint)
    assert never.fit_mode_ == "cold"


def test_a_cold_fit_after_a_refused_warm_start_equals_a_plain_cold_fit(crowd: CrowdData) -> None:
    base = CoNAL(seed=0, **FAST).fit(_take(crowd, 600))
    grown = _take(crowd, 900)
    refused = CoNAL(seed=0, **FAST).fit(grown, init=base)
    plain = CoNAL(seed=0, **FAST).fit(grown)
    assert refused.fit_mode_ == "cold"
    np.testing.assert_array_equal(refused.probas_, plain.probas_)
    np.testing.assert_array_equal(refused.confusions_, plain.confusions_)


def test_changed_classes_or_feature_width_force_a_cold_fit(crowd: CrowdData) -> None:
    base = CoNAL(seed=0, **FAST).fit(crowd)
    renamed = CrowdData(
        items=crowd.items,
        annotators=crowd.annotators,
        classes=("a", "b", "z"),
        item_idx=crowd.item_idx,
        annotator_idx=crowd.annotator_idx,
        label_idx=crowd.label_idx,
        features=crowd.features,
    )
    assert CoNAL(seed=0, **FAST).fit(renamed, init=base).fit_reason_ == "the project's classes changed"
    assert crowd.features is not None
    wider = CrowdData(
        items=crowd.items,
        annotators=crowd.annotators,
        classes=crowd.classes,
        item_idx=crowd.item_idx,
        annotator_idx=crowd.annotator_idx,
        label_idx=crowd.label_idx,
        features=np.hstack([crowd.features, crowd.features[:, :1]]),
    )
    refit = CoNAL(seed=0, **FAST).fit(wider, init=base)
    assert refit.fit_mode_ == "cold" and refit.fit_reason_ == "the item features changed width (5 -> 6)"
    # New items (the platform re-standardises features over all of them) count like labels.
    more_items = CrowdData(
        items=(*crowd.items, *[f"new{i}" for i in range(9)]),
        annotators=crowd.annotators,
        classes=crowd.classes,
        item_idx=crowd.item_idx,
        annotator_idx=crowd.annotator_idx,
        label_idx=crowd.label_idx,
        features=np.vstack([crowd.features, crowd.features[:9]]),
    )
    grown = CoNAL(seed=0, **FAST).fit(more_items, init=base)
    assert grown.fit_mode_ == "cold"
    assert "the items changed by 3.0% since the last cold fit (300 -> 309)" in grown.fit_reason_


def test_a_checkpoint_without_its_cold_ancestor_is_refitted_cold(crowd: CrowdData) -> None:
    old = DawidSkene().fit(crowd)
    del old.cold_n_annotations_  # what a checkpoint written before the policy holds
    refit = DawidSkene(warm_min_annotations=0).fit(crowd, init=old)
    assert refit.fit_mode_ == "cold"
    assert refit.fit_reason_ == "the previous fit does not record the cold fit it descends from"


def test_majority_vote_says_it_always_fits_from_scratch(crowd: CrowdData) -> None:
    first = MajorityVote().fit(crowd)
    again = MajorityVote().fit(crowd, init=first)
    assert again.fit_mode_ == "cold" and again.fit_reason_ == "MajorityVote always fits from scratch"


def test_small_crowds_are_always_refitted_cold(crowd: CrowdData) -> None:
    # The default: below 50,000 annotations a cold fit is cheap and the only way to
    # promise a cold fit's result.
    base = DawidSkene().fit(_take(crowd, 800))
    refit = DawidSkene().fit(_take(crowd, 801), init=base)
    assert (refit.fit_mode_, refit.fit_reason_) == ("cold", "801 annotations: below 50000, every refit is cold")


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"warm_max_growth": -0.1}, "warm_max_growth must be >= 0"),
        ({"warm_max_growth": float("nan")}, "warm_max_growth must be >= 0"),
        ({"warm_min_annotations": -1}, "warm_min_annotations must be >= 0"),
    ],
)
def test_bad_warm_policy_raises(kw: dict, message: str) -> None:
    for cls in (DawidSkene, CoNAL):
        with pytest.raises(ValueError, match=message):
            cls(**kw)
    with pytest.raises(ValueError, match="warm_lr_scale must be > 0"):
        CoNAL(warm_lr_scale=0)
