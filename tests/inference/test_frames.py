"""The DataFrame face of the models (inference/frames.py): crowd-kit's ``task, worker, label``
frames in, pandas outputs indexed by task out; the CrowdData path unchanged."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from inference.data import CrowdData
from inference.frames import crowd_from_frame
from inference.models import MODELS, CrowdModel, make_model
from inference.synthetic import make_synthetic_crowd

# Few epochs: these tests check the plumbing, not the models' accuracy.
QUICK: dict[str, dict[str, Any]] = {
    "mv": {},
    "ds": {},
    "conal": {"epochs": 3, "holdout": 0, "label_weight": 1.0, "num_threads": 1},
    "crowding": {
        "num_threads": 1,
        "pretrain_epochs": 3,
        "gd_pretrain_epochs": 1,
        "crowding_epochs": 1,
        "inner_steps": 2,
        "max_pairs": 500,
    },
}


@pytest.fixture(scope="module")
def crowd() -> Any:
    """A small synthetic crowd with item features (CoNAL and CrowdInG need them to be quick)."""
    return make_synthetic_crowd(n_items=120, n_test=10, n_annotators=8, n_classes=3, labels_per_item=3, seed=4)


def as_frame(data: CrowdData) -> pd.DataFrame:
    """The crowd as crowd-kit's frame, with int task ids and int labels ("i007" -> 7, "c2" -> 2) so that the
    outputs can show they give the caller's own values back."""
    return pd.DataFrame(
        {
            "task": [int(data.items[i][1:]) for i in data.item_idx],
            "worker": [data.annotators[r] for r in data.annotator_idx],
            "label": [int(data.classes[k][1:]) for k in data.label_idx],
        }
    )


def task_features(data: CrowdData) -> pd.DataFrame:
    assert data.features is not None
    return pd.DataFrame(data.features, index=[int(i[1:]) for i in data.items])


@pytest.mark.parametrize("name", list(QUICK))
def test_a_frame_fit_answers_in_pandas_and_agrees_with_the_crowddata_fit(crowd: Any, name: str) -> None:
    data = crowd.data
    assert data.items[0] == "i000" and data.classes == ("c0", "c1", "c2")  # what as_frame assumes
    df, feats = as_frame(data), task_features(data)
    # The CrowdData a caller would build from the same rows (the torch models' random start
    # follows the annotator order, so it must be the frame's order of first appearance).
    same = CrowdData.from_records(
        ([str(t) for t in df["task"]], df["worker"].tolist(), [str(k) for k in df["label"]]),
        classes=["0", "1", "2"],
        items=[str(t) for t in feats.index],
        features=feats.to_numpy(),
    )
    plain = make_model(name, **QUICK[name]).fit(same)
    framed = make_model(name, **QUICK[name]).fit(df, features=feats)

    # The CrowdData path is unchanged: numpy out.
    assert isinstance(plain.labels_, np.ndarray) and isinstance(plain.probas_, np.ndarray)
    # The frame path: a Series and a DataFrame indexed by task, with the caller's int values.
    assert isinstance(framed.labels_, pd.Series) and isinstance(framed.probas_, pd.DataFrame)
    tasks = [int(i[1:]) for i in data.items]
    assert framed.labels_.index.tolist() == tasks and framed.labels_.index.name == "task"
    assert framed.probas_.index.tolist() == tasks and framed.probas_.columns.tolist() == [0, 1, 2]
    assert framed.labels_.name == "agg_label"
    # Same crowd, same seed: the same answer either way.
    assert framed.labels_.tolist() == [int(same.classes[k]) for k in plain.labels_]
    np.testing.assert_allclose(framed.probas_.to_numpy(), plain.probas_, atol=1e-6)


def test_every_registered_model_takes_frames() -> None:
    # A model added later inherits the DataFrame face; this test names them all so a new
    # model without a QUICK entry fails here instead of going untested.
    assert sorted(MODELS.names()) == sorted(QUICK)


def test_frames_without_features_and_string_ids() -> None:
    df = pd.DataFrame(
        {
            "task": ["t1", "t1", "t1", "t2", "t2", "t2", "t3", "t3"],
            "worker": ["ann", "bob", "cid", "ann", "bob", "cid", "ann", "bob"],
            "label": ["cat", "cat", "dog", "dog", "dog", "dog", "cat", "dog"],
        }
    )
    labels = make_model("mv").fit_predict(df)
    assert labels.to_dict() == {"t1": "cat", "t2": "dog", "t3": labels["t3"]}
    probas = make_model("ds").fit_predict_proba(df)
    assert probas.columns.tolist() == ["cat", "dog"]
    np.testing.assert_allclose(probas.sum(axis=1).to_numpy(), 1.0)
    assert probas.idxmax(axis=1)["t2"] == "dog"


def test_features_as_an_array_follow_the_first_appearance_of_tasks(crowd: Any) -> None:
    df = as_frame(crowd.data).sample(frac=1.0, random_state=0)  # shuffled rows
    order = list(pd.unique(df["task"]))
    feats = task_features(crowd.data).loc[order].to_numpy()
    data, ids = crowd_from_frame(df, features=feats)
    assert ids.tasks == order
    assert data.features is not None
    np.testing.assert_allclose(data.features, feats, rtol=1e-6)


def test_a_features_frame_may_hold_tasks_nobody_labelled(crowd: Any) -> None:
    feats = task_features(crowd.data)
    spare = pd.DataFrame(np.zeros((1, feats.shape[1])), index=[9999])
    model = make_model("ds").fit(as_frame(crowd.data), features=pd.concat([feats, spare]))
    assert model.labels_.index[-1] == 9999
    assert model.labelled_mask_ is not None and not model.labelled_mask_[-1]


def test_a_frame_fitted_model_checkpoints_as_numpy(crowd: Any) -> None:
    model = make_model("ds").fit(as_frame(crowd.data))
    back = CrowdModel.loads(model.dumps())
    assert isinstance(back.labels_, np.ndarray)
    np.testing.assert_allclose(back.probas_, model.probas_.to_numpy())


# ---------------------------------------------------------------------- bad input
GOOD = {"task": [1, 1, 2], "worker": ["a", "b", "a"], "label": ["x", "y", "x"]}


@pytest.mark.parametrize(
    ("frame", "features", "message"),
    [
        (pd.DataFrame({"task": [1], "label": ["x"]}), None, "lacks the column.*'worker'"),
        (pd.DataFrame({"item": [1], "annotator": ["a"], "label": ["x"]}), None, "'task', 'worker'"),
        (pd.DataFrame({**GOOD, "label": ["x", None, "x"]}), None, "column 'label' has 1 missing"),
        (pd.DataFrame({**GOOD, "task": [1, "1", 2]}), None, "column 'task' holds 1 and '1'"),
        (pd.DataFrame(columns=["task", "worker", "label"]), None, "no rows"),
        (pd.DataFrame({**GOOD, "worker": ["a", "a", "a"]}), None, "duplicated annotation"),
        (pd.DataFrame(GOOD), pd.DataFrame({"f": [0.1]}, index=[1]), "column 'task' holds 1 task.*missing"),
        (pd.DataFrame(GOOD), pd.DataFrame({"f": [0.1, 0.2, 0.3]}, index=[1, 1, 2]), "repeats task '1'"),
        (pd.DataFrame(GOOD), pd.DataFrame({"f": ["a", "b"]}, index=[1, 2]), "features must be numeric"),
        (pd.DataFrame(GOOD), np.zeros((3, 2)), "features has 3 rows but there are 2 items"),
    ],
)
def test_bad_frames_are_value_errors_naming_the_problem(frame: pd.DataFrame, features: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_model("mv").fit(frame, features=features)


def test_features_argument_is_for_frames_only(crowd: Any) -> None:
    with pytest.raises(ValueError, match="features= goes with a DataFrame"):
        make_model("mv").fit(crowd.data, features=np.zeros((crowd.data.n_items, 2)))


def test_anything_else_is_a_value_error_naming_both_accepted_inputs() -> None:
    with pytest.raises(ValueError, match="CrowdData or a pandas DataFrame with columns task, worker, label"):
        make_model("conal").fit({"task": [1], "worker": ["a"], "label": ["x"]})
