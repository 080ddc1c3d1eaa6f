"""crowdlab's learning-from-crowds engine (pure Python: numpy, torch, scikit-learn; no Django).

The public names resolve lazily: importing a light submodule (``inference.embeddings``,
which the web's settings read) must not load scipy and the models (most of a second).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inference.data import CrowdData
    from inference.models import MODELS, CoNAL, CrowdInG, CrowdModel, DawidSkene, MajorityVote, make_model

__all__ = ["MODELS", "CoNAL", "CrowdData", "CrowdInG", "CrowdModel", "DawidSkene", "MajorityVote", "make_model"]

_HOME = {"CrowdData": "inference.data"}


def __getattr__(name: str) -> Any:
    # CoNAL and CrowdInG are optional modules: resolving lazily also lets
    # `import inference` work while they are absent, with a clear error if used.
    if name in __all__:
        return getattr(importlib.import_module(_HOME.get(name, "inference.models")), name)
    raise AttributeError(f"module 'inference' has no attribute {name!r}")
