"""crowdlab's learning-from-crowds engine (pure Python: numpy, torch, scikit-learn; no Django)."""

from __future__ import annotations

from typing import Any

from inference.data import CrowdData
from inference.models import MODELS, CrowdModel, DawidSkene, MajorityVote, make_model

__all__ = ["MODELS", "CoNAL", "CrowdData", "CrowdInG", "CrowdModel", "DawidSkene", "MajorityVote", "make_model"]


def __getattr__(name: str) -> Any:
    # CoNAL (and later CrowdInG) are optional modules: resolve them lazily so that
    # `import inference` works while they are absent, with a clear error if used.
    import inference.models as _models

    if name in ("CoNAL", "CrowdInG"):
        return getattr(_models, name)  # ImportError with the reason if unavailable
    raise AttributeError(f"module 'inference' has no attribute {name!r}")
