"""Feature builders the platform and the CLI call: numeric standardisation and text → dense features.

Text goes through a sentence-transformers model when the extra ``crowdlab[text]``
is installed (``inference.embeddings``), else through TF-IDF + TruncatedSVD
(:func:`featurize_texts` picks and says which).

Everything goes through scikit-learn so the transforms are standard, reproducible
(``seed``) and can be re-applied to new items with the returned fitted objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import Normalizer, StandardScaler

from inference.embeddings import TFIDF, EmbeddingProgress, SentenceEmbedder, describe_text_model, resolve_text_model

__all__ = ["TextFeaturizer", "featurize_texts", "standardise", "standardise_numeric", "text_features"]


def standardise(X: np.ndarray) -> tuple[np.ndarray, StandardScaler]:
    """Zero-mean, unit-variance columns as float32; returns the fitted scaler for new items.

    Constant columns are centred but not scaled (StandardScaler leaves scale 1 where the
    variance is zero), so they become zeros instead of NaN.
    """
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"features must be a 2-D matrix, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("features must have at least one row")
    if not np.isfinite(arr).all():
        raise ValueError("features contain NaN or inf values")
    scaler = StandardScaler().fit(arr)
    return scaler.transform(arr).astype(np.float32), scaler


# The contract name used by the platform; same function.
standardise_numeric = standardise


@dataclass
class TextFeaturizer:
    """TF-IDF (word 1-2 grams, sublinear tf) → TruncatedSVD (LSA) → L2 normalisation.

    ``n_components`` is capped by the vocabulary size so tiny corpora still work.
    """

    n_components: int = 128
    seed: int = 0
    min_df: int = 1
    max_features: int | None = 50_000

    def fit_transform(self, texts: Sequence[str]) -> np.ndarray:
        docs = _check_texts(texts)
        self.vectorizer_ = TfidfVectorizer(
            ngram_range=(1, 2), sublinear_tf=True, min_df=self.min_df, max_features=self.max_features
        )
        tfidf = self.vectorizer_.fit_transform(docs)
        n_comp = max(1, min(int(self.n_components), tfidf.shape[1] - 1, tfidf.shape[0] - 1))
        if n_comp < 1 or tfidf.shape[1] < 2:
            raise ValueError("texts have too small a vocabulary to build features (need >= 2 distinct words)")
        self.svd_ = TruncatedSVD(n_components=n_comp, random_state=self.seed)
        self.normalizer_ = Normalizer(copy=False)
        dense = self.svd_.fit_transform(tfidf)
        out: np.ndarray = self.normalizer_.transform(dense).astype(np.float32)  # sklearn is untyped
        return out

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        if not hasattr(self, "svd_"):
            raise ValueError("TextFeaturizer must be fitted (fit_transform) before transform")
        dense = self.svd_.transform(self.vectorizer_.transform(_check_texts(texts)))
        out: np.ndarray = self.normalizer_.transform(dense).astype(np.float32)  # sklearn is untyped
        return out


def text_features(
    texts: Sequence[str], *, n_components: int = 128, seed: int = 0, dim: int | None = None
) -> np.ndarray:
    """Dense (N, n_components) float32 features for raw texts (TF-IDF + TruncatedSVD, L2-normalised).

    ``dim`` is an alias of ``n_components``.
    """
    if dim is not None:
        n_components = dim
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    return TextFeaturizer(n_components=n_components, seed=seed).fit_transform(texts)


def featurize_texts(
    texts: Sequence[str],
    *,
    model: str | None = None,
    seed: int = 0,
    n_components: int = 128,
    progress: EmbeddingProgress | None = None,
) -> tuple[np.ndarray, str]:
    """(features, featurizer name) for raw texts: sentence embeddings or TF-IDF + SVD.

    ``model`` is what ``inference.embeddings.resolve_text_model`` accepts; with
    ``None``/"auto" and no sentence-transformers installed this is TF-IDF.
    ``n_components`` and ``seed`` only concern TF-IDF (embeddings are deterministic).
    """
    resolved = resolve_text_model(model)
    if resolved == TFIDF:
        return text_features(texts, n_components=n_components, seed=seed), describe_text_model(TFIDF)
    embedder = SentenceEmbedder(resolved)
    return embedder.encode(_check_texts(texts), progress=progress), embedder.name


def _check_texts(texts: Sequence[str]) -> list[str]:
    docs = [t if isinstance(t, str) else "" if t is None else str(t) for t in texts]
    if not docs:
        raise ValueError("texts must not be empty")
    return docs
