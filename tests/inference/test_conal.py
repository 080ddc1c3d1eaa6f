"""CoNAL: recovery of a known common confusion, edge cases, determinism, warm start, checkpoints."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from inference.data import CrowdData
from inference.models import MODELS, make_model
from inference.models.conal import CoNAL
from inference.models.ds import DawidSkene
from inference.models.mv import MajorityVote
from inference.synthetic import SyntheticCrowd, make_synthetic_crowd

torch.set_num_threads(1)

# Small enough for a few seconds per fit on one shared core.
FAST = dict(num_threads=1)
# Warm refits are only allowed on large crowds by default; these tests exercise the
# warm path itself on small ones.
WARM = dict(warm_min_annotations=0)


@pytest.fixture(scope="module")
def crowd() -> SyntheticCrowd:
    # The default synthetic setting (8,000 items, asymmetric common confusion of strength
    # 0.6, share 0.5); much smaller crowds with individual strength 0.7 are often not
    # identifiable (DS and CoNAL both end in a label permutation).
    return make_synthetic_crowd(common_share=0.5, seed=0)


@pytest.fixture(scope="module")
def fitted(crowd: SyntheticCrowd) -> CoNAL:
    return CoNAL(seed=0, **FAST).fit(crowd.data)


def test_registered_under_conal() -> None:
    assert MODELS["conal"] is CoNAL
    assert isinstance(make_model("conal", epochs=3), CoNAL)


def test_recovers_the_common_confusion_matrix(crowd: SyntheticCrowd, fitted: CoNAL) -> None:
    # Stated tolerance: mean absolute error over the C x C cells <= 0.05 (default setting:
    # asymmetric common confusion of strength 0.6, common share 0.5).
    assert fitted.common_confusion_ is not None
    mae = np.abs(fitted.common_confusion_ - crowd.true_common_confusion).mean()
    assert mae <= 0.05, f"common confusion MAE {mae:.3f}"
    # And the dominant off-diagonal cell of each row is the true flip target.
    est, true = fitted.common_confusion_.copy(), crowd.true_common_confusion.copy()
    np.fill_diagonal(est, 0)
    np.fill_diagonal(true, 0)
    assert (est.argmax(1) == true.argmax(1)).all()


def test_shapes_row_sums_and_fitted_attributes(crowd: SyntheticCrowd, fitted: CoNAL) -> None:
    d = crowd.data
    n, r, c = d.n_items, d.n_annotators, d.n_classes
    assert fitted.labels_.shape == (n,) and fitted.labels_.dtype == np.int64
    for p in (fitted.probas_, fitted.posterior_probas_, fitted.classifier_probas_):
        assert p is not None and p.shape == (n, c)
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-9)
    assert fitted.confusions_.shape == (r, c, c)
    np.testing.assert_allclose(fitted.confusions_.sum(2), 1.0, atol=1e-9)
    assert fitted.common_confusion_ is not None
    np.testing.assert_allclose(fitted.common_confusion_.sum(1), 1.0, atol=1e-9)
    assert fitted.omega_ is not None and fitted.omega_.shape == (d.n_annotations,)
    assert ((fitted.omega_ > 0) & (fitted.omega_ < 1)).all()
    assert fitted.annotator_omega_ is not None and fitted.annotator_omega_.shape == (r,)
    assert len(fitted.loss_history_) == fitted.n_epochs_ and np.isfinite(fitted.loss_history_).all()
    assert fitted.fit_seconds_ > 0
    assert fitted.items_ == d.items and fitted.annotators_ == d.annotators
    assert fitted.predict_proba(crowd.test_features).shape == (len(crowd.test_labels), c)


def test_beats_majority_vote_and_ds_under_strong_common_noise() -> None:
    # 60% of the labels come from the common confusion (strength 0.4, the paper's setting
    # for the share study): majority vote is fooled, the truth stays identifiable.
    s = make_synthetic_crowd(n_items=2500, n_test=200, common_share=0.6, common_strength=0.4, seed=5)
    gold = s.true_labels
    mv = (MajorityVote().fit_predict(s.data) == gold).mean()
    ds = (DawidSkene().fit_predict(s.data) == gold).mean()
    conal = (CoNAL(seed=0, **FAST).fit_predict(s.data) == gold).mean()
    assert conal >= mv + 0.2, (conal, mv)
    assert conal >= ds + 0.05, (conal, ds)


def test_single_label_annotator_unused_class_and_unlabelled_item() -> None:
    rng = np.random.default_rng(0)
    classes = ["a", "b", "c", "never"]
    truth = rng.integers(0, 3, size=120)
    records = []
    for i, z in enumerate(truth):
        for w in range(3):
            label = classes[z] if rng.random() < 0.8 else classes[(z + 1) % 3]
            records.append((f"i{i}", f"w{w}", label))
    records.append(("i0", "lonely", "a"))  # an annotator with a single label
    items = [f"i{i}" for i in range(120)] + ["unlabelled"]
    feats = np.vstack([np.eye(3)[truth] * 2 + rng.normal(0, 0.5, (120, 3)), np.zeros((1, 3))]).astype(np.float32)
    data = CrowdData.from_records(records, classes=classes, items=items, features=feats)
    m = CoNAL(seed=0, epochs=20, num_threads=1).fit(data)
    assert m.probas_.shape == (121, 4)
    assert np.isfinite(m.probas_).all() and np.isfinite(m.confusions_).all()
    np.testing.assert_allclose(m.probas_.sum(1), 1.0, atol=1e-9)
    # The unlabelled item gets the classifier's prediction.
    assert m.classifier_probas_ is not None
    np.testing.assert_allclose(m.probas_[120], m.classifier_probas_[120])
    assert m.labelled_mask_ is not None and not m.labelled_mask_[120]
    lonely = data.annotators.index("lonely")
    np.testing.assert_allclose(m.confusions_[lonely].sum(1), 1.0, atol=1e-9)
    assert m.annotator_omega_ is not None and np.isfinite(m.annotator_omega_[lonely])
    assert (m.labels_[:120] == truth).mean() >= 0.9
    assert (m.labels_ != classes.index("never")).all()


def test_crowd_without_features_works_and_is_no_worse_than_ds() -> None:
    s = make_synthetic_crowd(n_items=2000, n_test=10, common_share=0.0, seed=4)
    d = s.data
    bare = CrowdData(
        items=d.items,
        annotators=d.annotators,
        classes=d.classes,
        item_idx=d.item_idx,
        annotator_idx=d.annotator_idx,
        label_idx=d.label_idx,
    )
    m = CoNAL(seed=0, **FAST).fit(bare)
    ds = (DawidSkene().fit_predict(bare) == s.true_labels).mean()
    acc = (m.labels_ == s.true_labels).mean()
    assert acc >= ds - 0.01, (acc, ds)
    with pytest.raises(ValueError, match="without features"):
        m.predict_proba(np.zeros((2, 32), dtype=np.float32))


def test_without_features_the_posterior_is_ds_and_the_rest_stays_conal(crowd: SyntheticCrowd) -> None:
    # The default crowd (strong common noise) without its features: the per-item
    # embedding fitted jointly with the noise layers ends far below DS here (0.65-0.67
    # against 0.83 when it was the aggregation), so the posterior is DS's.
    bare = dataclasses.replace(crowd.data, features=None)
    seen: list[int] = []
    m = CoNAL(seed=0, **FAST).fit(bare, progress=lambda e, t, _loss: seen.append(e))
    ds = DawidSkene().fit(bare)
    assert np.allclose(m.posterior_probas_, ds.probas_)
    assert (m.labels_ == ds.labels_).all()
    assert m.label_weight_ == 1.0 and len(seen) == m.n_epochs_  # no tau probe without features
    # The classifier, the confusions and omega are still the CoNAL fit's own.
    assert m.classifier_probas_ is not None and not np.allclose(m.classifier_probas_, ds.probas_)
    assert m.common_confusion_ is not None and m.omega_ is not None
    assert m.omega_.shape == (bare.n_annotations,) and m.confusions_.shape == ds.confusions_.shape
    assert (CoNAL(seed=0, aggregate="classifier", **FAST).fit(bare).labels_ == m.classifier_probas_.argmax(1)).all()


def test_seed_determinism(crowd: SyntheticCrowd) -> None:
    small = make_synthetic_crowd(n_items=600, n_test=10, seed=2)
    a = CoNAL(seed=3, epochs=6, num_threads=1).fit(small.data)
    b = CoNAL(seed=3, epochs=6, num_threads=1).fit(small.data)
    np.testing.assert_array_equal(a.probas_, b.probas_)
    np.testing.assert_array_equal(a.confusions_, b.confusions_)
    assert a.loss_history_ == b.loss_history_
    c = CoNAL(seed=4, epochs=6, num_threads=1).fit(small.data)
    assert not np.array_equal(a.probas_, c.probas_)


def test_warm_start_matches_ids_adds_annotator_and_uses_fewer_epochs(crowd: SyntheticCrowd, fitted: CoNAL) -> None:
    d = crowd.data
    # 1% new annotations from a brand-new annotator, on the first items; the order of the
    # annotator list changes too, so matching must go by id.
    rng = np.random.default_rng(0)
    n_new = d.n_annotations // 100
    new_items = rng.choice(d.n_items, size=n_new, replace=False)
    new_labels = crowd.true_labels[new_items]
    annotators = ("newcomer", *reversed(d.annotators))
    old_to_new = {a: annotators.index(a) for a in d.annotators}
    ann_idx = np.array([old_to_new[d.annotators[r]] for r in d.annotator_idx], dtype=np.int64)
    grown = CrowdData(
        items=d.items,
        annotators=annotators,
        classes=d.classes,
        item_idx=np.concatenate([d.item_idx, new_items]),
        annotator_idx=np.concatenate([ann_idx, np.zeros(n_new, dtype=np.int64)]),
        label_idx=np.concatenate([d.label_idx, new_labels]),
        features=d.features,
    )
    epochs_seen: list[int] = []
    warm = CoNAL(seed=0, **FAST, **WARM).fit(grown, init=fitted, progress=lambda e, t, loss: epochs_seen.append(t))
    assert warm.fit_mode_ == "warm"
    assert warm.n_epochs_ < fitted.n_epochs_
    assert epochs_seen and epochs_seen[-1] == warm.n_epochs_
    # Matched annotators keep their confusions (by id, despite the new order).
    for name in d.annotators[:5]:
        old = fitted.confusions_[d.annotators.index(name)]
        new = warm.confusions_[annotators.index(name)]
        assert np.abs(old - new).mean() < 0.05
    assert warm.common_confusion_ is not None and fitted.common_confusion_ is not None
    assert np.abs(warm.common_confusion_ - fitted.common_confusion_).mean() < 0.02
    # Results stay close to the cold fit.
    assert (warm.labels_ == fitted.labels_).mean() >= 0.95
    assert warm.confusions_.shape == (len(annotators), d.n_classes, d.n_classes)


def test_dumps_loads_round_trip_and_warm_start_from_checkpoint(crowd: SyntheticCrowd, fitted: CoNAL) -> None:
    blob = fitted.dumps()
    back = CoNAL.loads(blob)
    np.testing.assert_array_equal(back.probas_, fitted.probas_)
    np.testing.assert_array_equal(back.confusions_, fitted.confusions_)
    np.testing.assert_array_equal(back.posterior_probas_, fitted.posterior_probas_)
    assert back.items_ == fitted.items_ and back.classes_ == fitted.classes_
    np.testing.assert_allclose(
        back.predict_proba(crowd.test_features), fitted.predict_proba(crowd.test_features), atol=1e-6
    )
    again = CoNAL(seed=0, **FAST, **WARM).fit(crowd.data, init=back)
    assert again.fit_mode_ == "warm"
    assert (again.labels_ == fitted.labels_).mean() >= 0.95


def test_aggregate_modes_and_bad_hyper_parameters(crowd: SyntheticCrowd, fitted: CoNAL) -> None:
    np.testing.assert_array_equal(fitted.probas_, fitted.posterior_probas_)
    clf = CoNAL(seed=0, aggregate="classifier", **FAST).fit(crowd.data)
    assert clf.classifier_probas_ is not None
    np.testing.assert_array_equal(clf.probas_, clf.classifier_probas_)
    with pytest.raises(ValueError, match="aggregate must be one of 'posterior', 'classifier'"):
        CoNAL(aggregate="vote")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="epochs"):
        CoNAL(epochs=0)
    with pytest.raises(ValueError, match="init must be a fitted CoNAL"):
        CoNAL(**FAST).fit(crowd.data, init=MajorityVote().fit(crowd.data))


# ---------------------------------------------------------------------- label weight (tau)
def test_label_weight_fixed_skips_the_probe_and_zero_is_the_classifier(crowd: SyntheticCrowd) -> None:
    m = CoNAL(seed=0, label_weight=0.0, epochs=3, **FAST).fit(crowd.data)
    assert m.label_weight_ == 0.0
    # tau = 0: the posterior is the classifier's prediction.
    np.testing.assert_allclose(m.posterior_probas_, m.classifier_probas_, atol=1e-9)
    one = CoNAL(seed=0, label_weight=1.0, epochs=3, **FAST).fit(crowd.data)
    assert one.label_weight_ == 1.0


def test_label_weight_chosen_without_gold_is_in_the_grid_and_kept_by_warm_start(
    crowd: SyntheticCrowd, fitted: CoNAL
) -> None:
    from inference.models.conal.posterior import LABEL_WEIGHTS

    assert fitted.label_weight_ in LABEL_WEIGHTS
    # A crowd with common noise: labels carry most of the information, tau stays high.
    assert fitted.label_weight_ >= 0.5
    d = crowd.data
    warm = CoNAL(seed=0, **FAST, **WARM).fit(d, init=fitted)
    assert warm.fit_mode_ == "warm"
    assert warm.label_weight_ == fitted.label_weight_


def test_choose_tau_prefers_tau_one_unless_a_smaller_one_wins_clearly() -> None:
    from inference.models.conal.posterior import LABEL_WEIGHTS, choose_tau

    rng = np.random.default_rng(0)
    t = len(LABEL_WEIGHTS)
    noise = rng.normal(0, 1.0, size=(1, 400))
    # Differences far below the noise: keep tau = 1.
    flat = np.zeros((t, 1)) + noise + rng.normal(0, 0.01, size=(t, 400))
    assert choose_tau(flat) == 1.0
    # tau = 0.125 better than every other by 0.3 nats on every annotation: chosen.
    clear = np.zeros((t, 400)) + noise
    clear[LABEL_WEIGHTS.index(0.125)] += 0.3
    assert choose_tau(clear) == 0.125


def test_weight_decay_rule_follows_the_data_shape() -> None:
    from inference.models.conal.training import weight_decay_rule

    assert weight_decay_rule(512, 1000) == pytest.approx(1e-2)  # wide inputs, few items: capped
    assert weight_decay_rule(32, 8000) == pytest.approx(1e-3)  # narrow inputs, many items: floor
    assert weight_decay_rule(124, 700) == pytest.approx(0.04 * (124 / 700) ** 2)
    assert CoNAL(weight_decay=5e-3)._weight_decay(512, 1000) == 5e-3


@pytest.mark.parametrize(
    "kw",
    [
        dict(label_weight=1.5),
        dict(label_weight=-0.1),
        dict(holdout=1.0),
        dict(holdout=-0.1),
        dict(probe_items=1),
        dict(probe_folds=0),
    ],
)
def test_bad_label_weight_and_holdout_raise(kw: dict) -> None:
    with pytest.raises(ValueError):
        CoNAL(**kw)


# ---------------------------------------------------------------------- fast kernels
def test_fused_relu_dropout_and_folded_eval_pass_match_the_plain_layers() -> None:
    from inference.models.conal.network import ReLUDropout, softmax

    torch.manual_seed(0)
    x = torch.randn(2000, 64)
    layer = ReLUDropout(0.5)
    layer.train()
    out = layer(x)
    kept = out != 0
    # Kept units are 2 relu(x) (inverted dropout at p = 0.5); about half of the positive ones.
    torch.testing.assert_close(out[kept], 2 * torch.relu(x)[kept])
    share = kept.sum().item() / (x > 0).sum().item()
    assert 0.47 < share < 0.53
    layer.eval()
    torch.testing.assert_close(layer(x), torch.relu(x))
    w = torch.randn(50, 10, 10)
    torch.testing.assert_close(softmax(w, 2), torch.softmax(w, 2))

    net = CoNAL(seed=0)._build_net(n_items=10, n_features=64, n_annotators=3, n_annotator_features=0, n_classes=4)
    net.train()
    for _ in range(3):  # give BatchNorm running statistics away from the defaults
        net.classifier(x * 2 + 1)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net.eval_logits(x, chunk=700), net.classifier(x), rtol=1e-4, atol=1e-4)


def test_sparse_ds_start_matches_a_direct_em_loop() -> None:
    from inference.models.noise import ds_init

    rng = np.random.default_rng(0)
    n_items, n_ann, c = 60, 5, 3
    a_item = np.repeat(np.arange(n_items), 3)
    a_ann = np.concatenate([rng.choice(n_ann, 3, replace=False) for _ in range(n_items)])
    a_lab = rng.integers(0, c, len(a_item))
    post, conf, pooled = ds_init(a_item, a_ann, a_lab, n_items + 2, n_ann, c, n_iter=3)
    # Reference: the same EM written with explicit loops over annotations.
    ref = np.zeros((n_items + 2, c))
    for i, y in zip(a_item, a_lab, strict=True):
        ref[i, y] += 1
    tot = ref.sum(1, keepdims=True)
    ref = np.where(tot > 0, ref / np.maximum(tot, 1), 1.0 / c)
    for _ in range(3):
        cf = np.zeros((n_ann, c, c))
        for i, r, y in zip(a_item, a_ann, a_lab, strict=True):
            cf[r, :, y] += ref[i]
        pl = cf.sum(0) + 1.0
        pl /= pl.sum(1, keepdims=True)
        cf = cf + 2.0 * pl[None]
        cf /= cf.sum(2, keepdims=True)
        prior = ref[tot[:, 0] > 0].mean(0) + 1e-3
        prior /= prior.sum()
        lp = np.tile(np.log(prior), (n_items + 2, 1))
        for i, r, y in zip(a_item, a_ann, a_lab, strict=True):
            lp[i] += np.log(cf[r, :, y])
        ref = np.exp(lp - lp.max(1, keepdims=True))
        ref /= ref.sum(1, keepdims=True)
        ref[tot[:, 0] == 0] = 1.0 / c
    np.testing.assert_allclose(post, ref, atol=1e-10)
    np.testing.assert_allclose(conf, cf, atol=1e-10)
    np.testing.assert_allclose(pooled, pl, atol=1e-10)


def test_progress_counts_the_probe_epochs_then_the_main_fit() -> None:
    # A small crowd: each probe holds out ~90 labels, so several probes run before the main fit.
    data = make_synthetic_crowd(n_items=300, n_test=10, n_annotators=10, labels_per_item=3, seed=4).data
    seen: list[tuple[int, int]] = []
    model = CoNAL(seed=0, **FAST).fit(data, progress=lambda e, t, _loss: seen.append((e, t)))
    epochs, totals = [e for e, _ in seen], [t for _, t in seen]
    assert epochs == list(range(1, len(seen) + 1))  # one call per epoch, probes first
    assert len(seen) > model.n_epochs_  # the probes' epochs were reported too
    assert all(a >= b for a, b in itertools.pairwise(totals))  # the total only shrinks (probes may stop early)
    assert seen[-1][0] == seen[-1][1]  # and the bar ends full
    # Reporting progress does not change the fit.
    assert (CoNAL(seed=0, **FAST).fit(data).probas_ == model.probas_).all()
    # A fixed tau runs no probe: exactly the main fit's epochs.
    fixed: list[tuple[int, int]] = []
    m2 = CoNAL(seed=0, label_weight=1.0, **FAST).fit(data, progress=lambda e, t, _loss: fixed.append((e, t)))
    assert fixed == [(e, m2.n_epochs_) for e in range(1, m2.n_epochs_ + 1)]


def test_mixture_likelihood_and_shrinkage_match_their_formulas() -> None:
    from inference.models.noise import mixture_likelihood, shrink_confusions

    rng = np.random.default_rng(0)
    n_ann, n_cls, n = 4, 3, 50
    pi_g = rng.dirichlet(np.ones(n_cls), n_cls)
    pi_r = rng.dirichlet(np.ones(n_cls), (n_ann, n_cls))
    w, r, y = rng.random(n), rng.integers(0, n_ann, n), rng.integers(0, n_cls, n)
    direct = w[:, None] * pi_g[:, y].T + (1 - w[:, None]) * pi_r[r, :, y]
    np.testing.assert_allclose(mixture_likelihood(pi_g, pi_r, w, r, y), direct, rtol=1e-12)
    assert mixture_likelihood(pi_g, pi_r, w, r, y, dtype=np.float32).dtype == np.float32
    counts = np.array([0, 1, 5, 100])
    shrunk = shrink_confusions(pi_r, pi_g, counts, 5.0)
    np.testing.assert_allclose(shrunk[0], pi_g)  # no labels: the target itself
    np.testing.assert_allclose(shrunk[2], (5 * pi_r[2] + 5 * pi_g) / 10)
    np.testing.assert_allclose(shrunk.sum(2), 1.0)
