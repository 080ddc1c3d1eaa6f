"""CoNAL: common noise adaptation layers (Chu, Ma & Wang, AAAI 2021).

One concern per module: ``network`` (the torch modules), ``training`` (the fit),
``posterior`` (aggregation and the label weight), ``model`` (the estimator: its
hyper-parameters, ``fit``, prediction and checkpoints). The noise-model arithmetic it
shares with CrowdInG is in ``inference.models.noise``.
"""

from __future__ import annotations

from inference.models.conal.model import CoNAL

__all__ = ["CoNAL"]
