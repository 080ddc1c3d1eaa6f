"""CrowdInG: pure helpers (LCA adjacency, selection sampler), fitted outputs, generated
annotations, determinism, checkpoints/warm start and the CLI end to end."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.cli import main
from inference.data import CrowdData
from inference.models import MODELS, CrowdModel, make_model
from inference.models._crowding_ops import (
    entropy,
    label_cooccurrence,
    lca_adjacency,
    normalised_adjacency,
    sample_candidate_pairs,
    select_by_entropy,
)
from inference.models.crowding import CrowdInG, GeneratedAnnotation
from inference.synthetic import SyntheticCrowd, make_synthetic_crowd

torch.set_num_threads(1)

# A short schedule: every phase runs, a fit takes a second or two on one shared core.
FAST = dict(num_threads=1, pretrain_epochs=6, gd_pretrain_epochs=1, crowding_epochs=2, inner_steps=2, max_pairs=3000)


@pytest.fixture(scope="module")
def crowd() -> SyntheticCrowd:
    # labels_per_item 2.2: most items have 2 labels, some 3, so k=3 leaves both kinds.
    # Milder noise than the generator's defaults (individual strength 0.7) so that a
    # two-epoch schedule is clearly above chance.
    return make_synthetic_crowd(
        n_items=600,
        n_test=200,
        n_annotators=12,
        n_classes=4,
        n_features=8,
        labels_per_item=2.2,
        individual_strength=0.3,
        common_strength=0.4,
        common_share=0.2,
        class_sep=1.0,
        seed=3,
    )


@pytest.fixture(scope="module")
def fitted(crowd: SyntheticCrowd) -> CrowdInG:
    return CrowdInG(seed=0, **FAST).fit(crowd.data)


# ---------------------------------------------------------------------- pure helpers
def _toy_crowd() -> CrowdData:
    return CrowdData.from_records(
        [
            ("i1", "alice", "cat"),
            ("i1", "bob", "dog"),
            ("i2", "alice", "cat"),
            ("i2", "bob", "cat"),
            ("i2", "carol", "dog"),
            ("i3", "alice", "bird"),
        ],
        classes=["bird", "cat", "dog"],
    )


def test_label_cooccurrence_counts_different_labels_on_the_same_item() -> None:
    # i1: one (cat, dog) pair; i2: two cats x one dog = 2 pairs; i3: a single label.
    expected = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.0, 3.0, 0.0]])
    np.testing.assert_array_equal(label_cooccurrence(_toy_crowd()), expected)


def test_lca_adjacency_on_a_toy_crowd() -> None:
    # Row-normalised co-occurrence: cat -> dog 1, dog -> cat 1, bird none. Plus I:
    # [[1,0,0],[0,1,1],[0,1,1]], degrees (1, 2, 2), so D^-1/2 (A+I) D^-1/2 is:
    expected = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.0, 0.5, 0.5]])
    np.testing.assert_allclose(lca_adjacency(_toy_crowd()), expected, atol=1e-12)


def test_normalised_adjacency_symmetrises_conditional_frequencies() -> None:
    a = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 3.0], [0.0, 3.0, 0.0]])
    # P(c'|c): row 0 [0,1,0], row 1 [1/4,0,3/4], row 2 [0,1,0]; symmetrised + I:
    a_hat = np.array([[1.0, 0.625, 0.0], [0.625, 1.0, 0.875], [0.0, 0.875, 1.0]])
    d = np.array([1.625, 2.5, 1.875])
    np.testing.assert_allclose(normalised_adjacency(a), a_hat / np.sqrt(np.outer(d, d)), atol=1e-12)
    with pytest.raises(ValueError, match="square"):
        normalised_adjacency(np.ones((2, 3)))


def test_selection_honours_per_annotator_counts() -> None:
    rng = np.random.default_rng(0)
    ann = np.array([0] * 10 + [1] * 4 + [2] * 3)
    ent = rng.uniform(0.1, 2.0, len(ann))
    counts = np.array([4, 0, 5])  # annotator 2 has only 3 candidates: it gets all of them
    chosen = select_by_entropy(ann, ent, counts, rng)
    assert np.bincount(ann[chosen], minlength=3).tolist() == [4, 0, 3]
    assert len(np.unique(chosen)) == len(chosen)  # without replacement


def test_selection_prefers_low_entropy() -> None:
    rng = np.random.default_rng(1)
    ann = np.zeros(2, dtype=np.int64)
    ent = np.array([0.05, 2.0])  # weights 20 : 0.5 -> the first is drawn ~97.6% of the time
    picks = [int(select_by_entropy(ann, ent, np.array([1]), rng)[0]) for _ in range(400)]
    assert 0.93 <= picks.count(0) / 400 <= 1.0


def test_candidate_pairs_exclude_observed_pairs() -> None:
    rng = np.random.default_rng(0)
    it, an = sample_candidate_pairs(3, 2, np.array([0, 1]), np.array([1, 0]), 100, rng)
    assert sorted(zip(it.tolist(), an.tolist(), strict=True)) == [(0, 0), (1, 1), (2, 0), (2, 1)]
    it, an = sample_candidate_pairs(1000, 50, np.array([0]), np.array([0]), 500, rng)
    assert 0 < len(it) <= 500 and not ((it == 0) & (an == 0)).any()


def test_entropy() -> None:
    np.testing.assert_allclose(entropy(np.array([[1.0, 0.0], [0.5, 0.5]])), [0.0, np.log(2)])


# ---------------------------------------------------------------------- the model
def test_registered_and_bad_hyper_parameters_name_the_field() -> None:
    assert MODELS["crowding"] is CrowdInG
    with pytest.raises(ValueError, match="aggregate must be one of 'posterior', 'generator', 'classifier'"):
        CrowdInG(aggregate="vote")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"t must be in \[0, 1\]"):
        make_model("crowding", t=1.5)


def test_shapes_and_probability_sums(crowd: SyntheticCrowd, fitted: CrowdInG) -> None:
    d = crowd.data
    n, r, c = d.n_items, d.n_annotators, d.n_classes
    assert fitted.labels_.shape == (n,) and fitted.labels_.dtype == np.int64
    for p in (fitted.probas_, fitted.posterior_probas_, fitted.generator_posterior_probas_, fitted.classifier_probas_):
        assert p is not None and p.shape == (n, c)
        assert (p >= 0).all()
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-9)
    assert fitted.confusions_.shape == (r, c, c)
    np.testing.assert_allclose(fitted.confusions_.sum(2), 1.0, atol=1e-9)
    # CoNAL pre-training (6 epochs + 1 on the DS posterior), then 1 G/D pre-training and
    # 2 CrowdInG epochs.
    assert len(fitted.loss_history_) == fitted.n_epochs_ == (6 + 1) + 1 + 2
    assert np.isfinite(fitted.loss_history_).all()
    np.testing.assert_allclose(fitted.lca_adjacency_, fitted.lca_adjacency_.T)
    test_p = fitted.predict_proba(crowd.test_features)
    assert test_p.shape == (len(crowd.test_labels), c)
    np.testing.assert_allclose(test_p.sum(1), 1.0, atol=1e-6)
    # It learns: well above chance (0.25) on the items and on unseen test items.
    assert (fitted.labels_ == crowd.true_labels).mean() > 0.6
    assert (test_p.argmax(1) == crowd.test_labels).mean() > 0.6


def test_generated_only_for_sparse_items_and_never_a_labeller(crowd: SyntheticCrowd, fitted: CrowdInG) -> None:
    d = crowd.data
    n_labels = np.bincount(d.item_idx, minlength=d.n_items)
    gen = fitted.generated_
    assert gen and all(isinstance(g, GeneratedAnnotation) for g in gen)
    labellers = {(d.items[i], d.annotators[r]) for i, r in zip(d.item_idx, d.annotator_idx, strict=True)}
    per_item: dict[str, int] = {}
    for g in gen:
        assert (g.item, g.annotator) not in labellers
        assert g.label in d.classes and 0.0 < g.probability <= 1.0
        per_item[g.item] = per_item.get(g.item, 0) + 1
    pos = {item: k for k, item in enumerate(d.items)}
    for item, count in per_item.items():
        assert n_labels[pos[item]] < fitted.k
        assert count == fitted.k - n_labels[pos[item]]  # topped up to k
    sparse = {d.items[i] for i in np.nonzero(n_labels < fitted.k)[0]}
    assert set(per_item) == sparse
    # No duplicated (item, annotator) among the generated ones either.
    assert len({(g.item, g.annotator) for g in gen}) == len(gen)


def test_generated_empty_when_k_is_zero(crowd: SyntheticCrowd) -> None:
    model = CrowdInG(seed=0, k=0, **{**FAST, "crowding_epochs": 1}).fit(crowd.data)
    assert model.generated_ == []


def test_same_seed_same_output(crowd: SyntheticCrowd, fitted: CrowdInG) -> None:
    again = CrowdInG(seed=0, **FAST).fit(crowd.data)
    np.testing.assert_array_equal(again.probas_, fitted.probas_)
    np.testing.assert_array_equal(again.classifier_probas_, fitted.classifier_probas_)
    assert again.generated_ == fitted.generated_
    assert again.loss_history_ == fitted.loss_history_
    other = CrowdInG(seed=1, **FAST).fit(crowd.data)
    assert not np.array_equal(other.classifier_probas_, fitted.classifier_probas_)


def test_checkpoint_round_trip_and_warm_start(crowd: SyntheticCrowd, fitted: CrowdInG) -> None:
    blob = fitted.dumps()
    loaded = CrowdModel.loads(blob)
    assert isinstance(loaded, CrowdInG)
    np.testing.assert_array_equal(loaded.probas_, fitted.probas_)
    assert loaded.generated_ == fitted.generated_
    np.testing.assert_allclose(
        loaded.predict_proba(crowd.test_features), fitted.predict_proba(crowd.test_features), atol=1e-6
    )
    # Warm start on a crowd with one more annotator (new id) and one more labelled item.
    d = crowd.data
    items = [d.items[i] for i in d.item_idx] + [d.items[0], d.items[1]]
    anns = [d.annotators[r] for r in d.annotator_idx] + ["newcomer", "newcomer"]
    labels = [d.classes[y] for y in d.label_idx] + [d.classes[0], d.classes[1]]
    data2 = CrowdData.from_records(
        (items, anns, labels), items=list(d.items), classes=list(d.classes), features=d.features
    )
    warm = CrowdInG(seed=0, warm_min_annotations=0, **FAST).fit(data2, init=loaded)
    assert warm.fit_mode_ == "warm"
    assert warm.n_epochs_ == warm.warm_pretrain_epochs + warm.warm_crowding_epochs
    assert warm.confusions_.shape == (d.n_annotators + 1, d.n_classes, d.n_classes)
    # The known annotators' crowd layer starts from the old one, so it stays close.
    old = fitted.confusions_
    new = warm.confusions_[[data2.annotators.index(a) for a in d.annotators]]
    assert np.abs(new - old).mean() < 0.05
    assert (warm.labels_ == crowd.true_labels).mean() > 0.6


def test_without_features_uses_item_embeddings() -> None:
    s = make_synthetic_crowd(n_items=300, n_test=10, n_annotators=8, n_classes=3, n_features=4, seed=2)
    d = s.data
    data = CrowdData(
        items=d.items,
        annotators=d.annotators,
        classes=d.classes,
        item_idx=d.item_idx,
        annotator_idx=d.annotator_idx,
        label_idx=d.label_idx,
    )
    model = CrowdInG(seed=0, **FAST).fit(data)
    np.testing.assert_allclose(model.probas_.sum(1), 1.0, atol=1e-9)
    with pytest.raises(ValueError, match="without features"):
        model.predict_proba(s.test_features)


# ---------------------------------------------------------------------- CLI
def test_cli_end_to_end_writes_generated_csv(tmp_path: Path) -> None:
    s = make_synthetic_crowd(
        n_items=80, n_test=10, n_annotators=6, n_classes=3, n_features=4, labels_per_item=1.5, seed=4
    )
    d = s.data
    with (tmp_path / "A.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["item", "annotator", "label"])
        w.writerows(
            (d.items[i], d.annotators[r], d.classes[y])
            for i, r, y in zip(d.item_idx, d.annotator_idx, d.label_idx, strict=True)
        )
    np.save(tmp_path / "F.npy", d.features)
    (tmp_path / "I.txt").write_text("\n".join(d.items) + "\n")
    out = tmp_path / "out"
    rc = main(
        [
            "fit",
            "--annotations",
            str(tmp_path / "A.csv"),
            "--model",
            "crowding",
            "--out",
            str(out),
            "--features",
            str(tmp_path / "F.npy"),
            "--items",
            str(tmp_path / "I.txt"),
            "--epochs",
            "2",
            "--param",
            "pretrain_epochs=5",
            "--param",
            "inner_steps=2",
            "--param",
            "num_threads=1",
        ]
    )
    assert rc == 0
    with (out / "generated.csv").open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    assert header == ["item", "annotator", "label", "probability"]
    assert rows
    human = {(d.items[i], d.annotators[r]) for i, r in zip(d.item_idx, d.annotator_idx, strict=True)}
    for item, annotator, label, prob in rows:
        assert (item, annotator) not in human
        assert label in d.classes and 0.0 < float(prob) <= 1.0
    run = json.loads((out / "run.json").read_text())
    assert run["model"] == "crowding" and run["params"]["crowding_epochs"] == 2
    with (out / "labels.csv").open(newline="") as fh:
        assert len(list(csv.DictReader(fh))) == d.n_items


def test_conal_pretraining_is_the_start(crowd: SyntheticCrowd, fitted: CrowdInG) -> None:
    """With no CrowdInG epochs the model is exactly the CoNAL it pre-trained with: same
    classifier, and the crowd layer is CoNAL's omega-mixed confusion per annotator; the
    CrowdInG epochs keep that crowd layer (lr_crowd_layer=0) unless asked to train it."""
    from inference.models.conal import CoNAL

    conal = CoNAL(seed=0, epochs=6, num_threads=1).fit(crowd.data)
    start = CrowdInG(seed=0, **{**FAST, "gd_pretrain_epochs": 0, "crowding_epochs": 0}).fit(crowd.data)
    # Same classifier; CrowdInG's probabilities only differ by its calibration temperature.
    np.testing.assert_array_equal(
        start.predict_proba(crowd.test_features).argmax(1), conal.predict_proba(crowd.test_features).argmax(1)
    )
    omega = conal.annotator_omega_[:, None, None]
    mixed = omega * conal.common_confusion_[None] + (1 - omega) * conal.confusions_
    np.testing.assert_allclose(start.confusions_, mixed, atol=1e-5)
    assert start.loss_history_ == conal.loss_history_
    # Same noise model per annotation and CoNAL's held-out label weight: same posterior.
    assert start.label_weight_ == conal.label_weight_ and start.temperature_ == 1.0
    np.testing.assert_allclose(start.posterior_probas_, conal.posterior_probas_, atol=1e-5)
    np.testing.assert_allclose(fitted.confusions_, mixed, atol=1e-5)
    # The generator starts at CoNAL's noise model of each (item, annotator) pair:
    # omega_a pi^g + (1 - omega_a) pi^r, not the per-annotator average of omega.
    d = crowd.data
    net = start._net
    assert net is not None and bool(net.use_mixture)
    x = torch.from_numpy((np.asarray(d.features, np.float32) - start.feature_mean_) / start.feature_scale_)
    r = torch.from_numpy(np.asarray(d.annotator_idx, np.int64))
    with torch.no_grad():
        cond = net.generator_conditionals(x[torch.from_numpy(np.asarray(d.item_idx))], r, r, None).double().numpy()
    w = conal.omega_[:, None, None]
    expected = w * conal.common_confusion_[None] + (1 - w) * conal.confusions_[np.asarray(d.annotator_idx)]
    np.testing.assert_allclose(cond, expected, atol=1e-4)
    assert np.abs(cond - start.confusions_[np.asarray(d.annotator_idx)]).max() > 1e-2  # pair-wise, not averaged
    # A crowd layer that is trained moves off CoNAL's mixture and is the generator's base.
    trained = CrowdInG(seed=0, lr_crowd_layer=1e-2, **FAST).fit(crowd.data)
    assert trained._net is not None and not bool(trained._net.use_mixture)
    assert np.abs(trained.confusions_ - mixed).max() > 1e-3


def test_dlcl_pretraining_still_runs(crowd: SyntheticCrowd) -> None:
    model = CrowdInG(seed=0, pretrain="dlcl", **FAST).fit(crowd.data)
    assert len(model.loss_history_) == model.n_epochs_ == 6 + 1 + 2
    assert (model.labels_ == crowd.true_labels).mean() > 0.6


@pytest.mark.parametrize("t", [1.0, 0.0], ids=["generator-update", "classifier-update"])
def test_generator_without_noise_input_trains(crowd: SyntheticCrowd, t: float) -> None:
    # noise_dim=0 is a valid generator (no eps input); the CRM updates used to index its
    # absent noise (None[idx]) and crash. t=1 sends every sampled pair through the
    # generator's update, t=0 through the classifier's.
    model = CrowdInG(seed=0, pretrain="dlcl", noise_dim=0, t=t, **FAST).fit(crowd.data)
    assert len(model.loss_history_) == model.n_epochs_ == 6 + 1 + 2
    assert np.all(np.isfinite(model.loss_history_))
    np.testing.assert_allclose(model.probas_.sum(1), 1.0, atol=1e-9)
    assert (model.labels_ == crowd.true_labels).mean() > 0.6


def test_progress_covers_the_conal_epochs(crowd: SyntheticCrowd) -> None:
    seen: list[tuple[int, int]] = []
    model = CrowdInG(seed=0, **FAST).fit(crowd.data, progress=lambda e, t, _loss: seen.append((e, t)))
    # One call per epoch: CoNAL's tau probes, then CoNAL's fit and CrowdInG's own epochs
    # (n_epochs_ counts the last two); the total only shrinks (probes may stop early).
    assert [e for e, _ in seen] == list(range(1, len(seen) + 1))
    assert len(seen) >= model.n_epochs_
    totals = [t for _, t in seen]
    assert all(a >= b for a, b in itertools.pairwise(totals))
    assert seen[-1] == (len(seen), len(seen))


def test_bad_pretrain_rejected() -> None:
    with pytest.raises(ValueError, match="pretrain"):
        CrowdInG(pretrain="ds")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lr_crowd_layer"):
        CrowdInG(lr_crowd_layer=-1.0)


def test_temperature_uses_the_other_labels() -> None:
    """Leave-one-out calibration: with two agreeing reliable labels per item and a prior
    that points the other way, a labels-only view wins (prior flattened: high T); when the
    prior agrees with the labels it is sharpened (low T)."""
    from inference.models.crowding.posterior import fit_temperature

    a_item = np.repeat(np.arange(50), 2)
    lik = np.tile([[0.9, 0.1]], (100, 1))  # every label says class 0 with a 0.9 / 0.1 annotator
    wrong = np.tile([[0.0, 2.0]], (50, 1))
    right = np.tile([[2.0, 0.0]], (50, 1))
    assert fit_temperature(wrong, lik, a_item) == pytest.approx(4.0)
    assert fit_temperature(right, lik, a_item) == pytest.approx(0.25)
    assert fit_temperature(right, lik[:0], a_item[:0]) == 1.0


def test_repeat_share_scales_the_classifier_step() -> None:
    """The CrowdInG classifier step is scaled by the share of annotations beyond each
    item's first: 0 with one label per item (the classifier stays CoNAL's), 2/3 with three."""
    from inference.models.crowding.training import repeat_share

    assert repeat_share(1000, 1000) == 0.0
    assert repeat_share(0, 0) == 0.0
    assert repeat_share(4500, 1500) == pytest.approx(2 / 3)
    assert repeat_share(1800, 1500) == pytest.approx(1 / 6)
