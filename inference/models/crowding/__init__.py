"""CrowdInG: learning from crowds with informative generative augmentation (Chu & Wang, KDD 2021).

One concern per module: ``network`` (the torch modules), ``training`` (pre-training and
the adversarial epochs), ``posterior`` (aggregation, calibration and generated
annotations), ``model`` (the estimator: hyper-parameters, ``fit``, prediction,
checkpoints). What it shares with CoNAL is public: ``inference.models.noise`` (noise-model
arithmetic), ``conal.network.pair_omega`` and ``conal.training.weight_decay_rule``.
"""

from __future__ import annotations

from inference.models.crowding.model import CrowdInG, GeneratedAnnotation

__all__ = ["CrowdInG", "GeneratedAnnotation"]
