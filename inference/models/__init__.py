"""Model registry: ``MODELS[name]`` and ``make_model(name, **params)``.

``MODELS`` is a mapping. MV and DS are always there; the torch models (CoNAL, CrowdInG)
live in their own modules and are imported the first time they are asked for, so
``python -m inference fit --model ds`` and malformed-input errors do not pay for
importing torch, and a missing or broken optional module never takes MV/DS down.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator, MutableMapping
from typing import Any

from inference.models.base import CrowdModel
from inference.models.ds import DawidSkene
from inference.models.mv import MajorityVote

__all__ = ["MODELS", "UNAVAILABLE", "CrowdModel", "DawidSkene", "MajorityVote", "make_model", "register"]

#: Optional models whose module exists but failed to import: name -> reason.
UNAVAILABLE: dict[str, str] = {}

# registry name -> (module, class name) of models imported on first use.
_OPTIONAL: dict[str, tuple[str, str]] = {
    "conal": ("inference.models.conal", "CoNAL"),
    "crowding": ("inference.models.crowding", "CrowdInG"),
}


class _Registry(MutableMapping[str, type[CrowdModel]]):
    """A dict of model classes whose optional entries are imported lazily."""

    def __init__(self, eager: dict[str, type[CrowdModel]], lazy: dict[str, tuple[str, str]]) -> None:
        self._classes = dict(eager)
        self._lazy = dict(lazy)

    def _resolve(self, name: str) -> type[CrowdModel] | None:
        spec = self._lazy.pop(name, None)
        if spec is None:
            return self._classes.get(name)
        module, cls_name = spec
        try:
            mod = importlib.import_module(module)
            cls: type[CrowdModel] = getattr(mod, cls_name)  # the registry's specs name CrowdModel classes
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the module exists but one of its imports is missing
                UNAVAILABLE[name] = f"{type(exc).__name__}: {exc}"
            return None
        except Exception as exc:  # noqa: BLE001 - any import-time failure makes the model unavailable, not the package
            # The reason is reported by make_model()/the CLI when this model is asked for.
            UNAVAILABLE[name] = f"{type(exc).__name__}: {exc}"
            return None
        self._classes[name] = cls
        return cls

    def names(self) -> list[str]:
        """Registered names without importing anything (optional ones whose module exists)."""
        present = [
            n
            for n, (module, _) in self._lazy.items()
            if n not in UNAVAILABLE and importlib.util.find_spec(module) is not None
        ]
        return sorted({*self._classes, *present})

    def __getitem__(self, name: str) -> type[CrowdModel]:
        cls = self._resolve(name)
        if cls is None:
            raise KeyError(name)
        return cls

    def __setitem__(self, name: str, cls: type[CrowdModel]) -> None:
        self._lazy.pop(name, None)
        self._classes[name] = cls

    def __delitem__(self, name: str) -> None:
        self._lazy.pop(name, None)
        del self._classes[name]

    def __iter__(self) -> Iterator[str]:
        for name in list(self._lazy):
            self._resolve(name)
        return iter(sorted(self._classes))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"MODELS({self.names()})"


MODELS = _Registry({"mv": MajorityVote, "ds": DawidSkene}, _OPTIONAL)


def register(name: str, cls: type[CrowdModel]) -> None:
    """Add a model class to the registry (used by optional model modules)."""
    MODELS[name] = cls


def __getattr__(name: str) -> Any:
    # `from inference.models import CoNAL` imports the optional module on demand.
    for reg_name, (_, cls_name) in _OPTIONAL.items():
        if name == cls_name:
            cls = MODELS.get(reg_name)
            if cls is None:
                reason = UNAVAILABLE.get(reg_name, "module not present")
                raise ImportError(f"inference.models.{name} is not available: {reason}")
            return cls
    raise AttributeError(f"module 'inference.models' has no attribute {name!r}")


def make_model(name: str, **params: Any) -> CrowdModel:
    """Instantiate a registered model by name with hyper-parameters ``params``."""
    cls = MODELS.get(name)
    if cls is None:
        if name in UNAVAILABLE:
            raise ValueError(f"model {name!r} failed to import: {UNAVAILABLE[name]}")
        raise ValueError(f"unknown model {name!r}; allowed: {MODELS.names()}")
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"bad hyper-parameters for model {name!r}: {exc}") from exc
