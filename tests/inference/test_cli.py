from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inference.cli import main

ROOT = Path(__file__).resolve().parents[2]

ANNOTATIONS = """item,annotator,label
i1,alice,cat
i1,bob,cat
i1,carol,dog
i2,alice,dog
i2,bob,dog
i2,carol,dog
i3,alice,cat
i3,carol,cat
i4,dave,dog
"""


@pytest.fixture
def crowd_dir(tmp_path: Path) -> Path:
    (tmp_path / "A.csv").write_text(ANNOTATIONS)
    # i5 is in the features but nobody labelled it: it must still be in labels.csv.
    (tmp_path / "F.csv").write_text("item,f1,f2\ni1,0.1,1.0\ni2,0.9,0.2\ni3,0.2,0.8\ni4,0.8,0.1\ni5,0.5,0.5\n")
    (tmp_path / "G.csv").write_text("item,label\ni1,cat\ni2,dog\ni3,cat\ni4,cat\n")
    return tmp_path


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "inference", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_fit_end_to_end_subprocess(crowd_dir: Path):
    out = crowd_dir / "out"
    proc = _run(
        "fit",
        "--annotations",
        crowd_dir / "A.csv",
        "--model",
        "ds",
        "--out",
        out,
        "--features",
        crowd_dir / "F.csv",
        "--gold",
        crowd_dir / "G.csv",
        "--seed",
        "3",
        "--epochs",
        "20",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "accuracy: 0.7500 (4 items with gold)"
    assert "Traceback" not in proc.stderr

    with (out / "labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["item", "label", "confidence", "p:cat", "p:dog"]
    assert [r["item"] for r in rows] == ["i1", "i2", "i3", "i4", "i5"]
    assert [r["label"] for r in rows[:3]] == ["cat", "dog", "cat"]
    for r in rows:
        p = np.array([float(r["p:cat"]), float(r["p:dog"])])
        assert p.sum() == pytest.approx(1.0, abs=1e-5)
        assert float(r["confidence"]) == pytest.approx(p.max(), abs=1e-6)

    conf = json.loads((out / "confusions.json").read_text())
    assert conf["classes"] == ["cat", "dog"] and conf["common"] is None
    assert set(conf["annotators"]) == {"alice", "bob", "carol", "dave"}
    assert conf["annotators"]["dave"]["n"] == 1 and conf["annotators"]["alice"]["omega"] is None
    np.testing.assert_allclose(np.array(conf["annotators"]["carol"]["confusion"]).sum(axis=1), 1.0, atol=1e-5)

    run = json.loads((out / "run.json").read_text())
    assert run["model"] == "ds" and run["params"]["n_iter"] == 20 and run["params"]["seed"] == 3
    assert run["counts"] == {"items": 5, "labelled_items": 4, "annotators": 4, "annotations": 9, "classes": 2}
    assert len(run["loss_history"]) == run["epochs"] >= 1
    assert run["seconds"] >= run["fit_seconds"] >= 0
    assert run["accuracy"]["aggregated"] == 0.75


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("item,annotator\ni1,alice\n", "expected 'item,annotator,label' or 'task,worker,label'"),
        ("", "is empty"),
    ],
    ids=["missing-column", "empty-file"],
)
def test_malformed_annotations_subprocess(tmp_path: Path, content: str, message: str):
    (tmp_path / "A.csv").write_text(content)
    proc = _run("fit", "--annotations", tmp_path / "A.csv", "--model", "mv", "--out", tmp_path / "out")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_crowdkit_header_and_npy_features(tmp_path: Path, crowd_dir: Path, capsys):
    (tmp_path / "A.csv").write_text(ANNOTATIONS.replace("item,annotator,label", "task,worker,label"))
    np.save(tmp_path / "F.npy", np.arange(10, dtype=np.float64).reshape(5, 2))
    (tmp_path / "I.txt").write_text("i5\ni4\ni3\ni2\ni1\n")
    out = tmp_path / "out"
    rc = main(
        [
            "fit",
            "--annotations",
            str(tmp_path / "A.csv"),
            "--model",
            "mv",
            "--out",
            str(out),
            "--features",
            str(tmp_path / "F.npy"),
            "--items",
            str(tmp_path / "I.txt"),
            "--gold",
            str(crowd_dir / "G.csv"),
        ]
    )
    assert rc == 0
    assert capsys.readouterr().out.startswith("accuracy: 0.7500")
    with (out / "labels.csv").open() as fh:
        assert [r["item"] for r in csv.DictReader(fh)] == ["i5", "i4", "i3", "i2", "i1"]


def test_text_features_input(tmp_path: Path):
    (tmp_path / "A.csv").write_text(ANNOTATIONS)
    texts = ["purring cat on a mat", "barking dog in the yard", "a cat asleep", "dog chasing a ball", "cat and dog"]
    with (tmp_path / "T.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["item", "text"])
        w.writerows([(f"i{k + 1}", t) for k, t in enumerate(texts)])
    out = tmp_path / "out"
    assert (
        main(
            [
                "fit",
                "--annotations",
                str(tmp_path / "A.csv"),
                "--model",
                "ds",
                "--out",
                str(out),
                "--texts",
                str(tmp_path / "T.csv"),
            ]
        )
        == 0
    )
    run = json.loads((out / "run.json").read_text())
    assert run["counts"]["items"] == 5 and run["counts"]["labelled_items"] == 4


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


@pytest.mark.parametrize(
    ("files", "args", "message"),
    [
        ({}, ["--model", "nope"], "unknown model 'nope'; allowed:"),
        ({"F.csv": "item,f1\ni1,0.1\ni2,abc\n"}, ["--features", "F.csv"], "'abc' is not a number"),
        ({"F.csv": "id,f1\ni1,0.1\n"}, ["--features", "F.csv"], "must start with an 'item' column"),
        ({"F.csv": "item,f1\ni1,0.1\ni2,0.2\n"}, ["--features", "F.csv"], "annotated item(s) have no feature row"),
        (
            {"F.npy": None, "I.txt": "i1\ni2\ni3\n"},
            ["--features", "F.npy", "--items", "I.txt"],
            "features have 5 rows but 3 item ids",
        ),
        ({"F.npy": None}, ["--features", "F.npy"], "needs --items"),
        ({"F.csv": "item,f1\ni1,nan\ni2,1\ni3,1\ni4,1\n"}, ["--features", "F.csv"], "NaN or inf"),
        ({"G.csv": "item\ni1\n"}, ["--gold", "G.csv"], "lacks column(s) label"),
        ({}, ["--epochs", "0"], "--epochs must be >= 1"),
        ({}, ["--param", "bogus=1"], "--param expects NAME=VALUE"),
        ({}, ["--features", "missing.csv"], "does not exist"),
    ],
    ids=[
        "unknown-model",
        "bad-number",
        "no-item-column",
        "missing-feature-row",
        "npy-row-mismatch",
        "npy-without-items",
        "nan-feature",
        "gold-missing-column",
        "bad-epochs",
        "bad-param",
        "missing-file",
    ],
)
def test_malformed_input_one_line_exit_2(
    tmp_path: Path, capsys, files: dict[str, str | None], args: list[str], message: str
):
    (tmp_path / "A.csv").write_text(ANNOTATIONS)
    for name, content in files.items():
        if content is None:
            np.save(tmp_path / name, np.zeros((5, 2)))
        else:
            (tmp_path / name).write_text(content)
    resolved = [str(tmp_path / a) if a.endswith((".csv", ".npy", ".txt")) else a for a in args]
    if "--model" not in resolved:
        resolved += ["--model", "ds"]
    rc = main(["fit", "--annotations", str(tmp_path / "A.csv"), "--out", str(tmp_path / "out"), *resolved])
    assert rc == 2
    assert message in _error_line(capsys)


def test_bad_rows_in_annotations(tmp_path: Path, capsys):
    (tmp_path / "A.csv").write_text("item,annotator,label\ni1,alice,cat\ni2,bob\n")
    assert main(["fit", "--annotations", str(tmp_path / "A.csv"), "--model", "mv", "--out", str(tmp_path / "o")]) == 2
    assert "line 3 has 2 fields" in _error_line(capsys)
    (tmp_path / "A.csv").write_text("item,annotator,label\n")
    assert main(["fit", "--annotations", str(tmp_path / "A.csv"), "--model", "mv", "--out", str(tmp_path / "o")]) == 2
    assert "no annotations" in _error_line(capsys)
    (tmp_path / "A.csv").write_text("item,annotator,label\ni1,alice,cat\ni1,alice,dog\n")
    assert main(["fit", "--annotations", str(tmp_path / "A.csv"), "--model", "mv", "--out", str(tmp_path / "o")]) == 2
    assert "labelled more than once" in _error_line(capsys)


def test_missing_required_argument(capsys):
    assert main(["fit", "--model", "mv"]) == 2
    assert "--annotations" in _error_line(capsys)
    assert main([]) == 2
    assert "a command is required" in _error_line(capsys)


def test_mv_and_ds_runs_do_not_import_torch(crowd_dir: Path):
    # Keeps the CLI (and error messages) fast: torch is only for the neural models.
    code = (
        "import sys; from inference.cli import main; "
        f"rc = main(['fit', '--annotations', {str(crowd_dir / 'A.csv')!r}, '--model', 'ds', "
        f"'--out', {str(crowd_dir / 'o')!r}]); print(rc, 'torch' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout.split() == ["0", "False"], proc.stderr


def test_tqdm_progress_draws_only_when_enabled(capsys):
    from inference.models.base import TqdmProgress

    with TqdmProgress(desc="fit ds", enabled=False) as quiet:
        quiet(1, 3, 0.5)
    assert capsys.readouterr().err == ""
    with TqdmProgress(desc="fit ds", enabled=True) as bar:
        for epoch in (1, 2, 3):
            bar(epoch, 3, 1.0 / epoch)
    err = capsys.readouterr().err
    assert "fit ds" in err and "3/3" in err and "loss=0.3333" in err
