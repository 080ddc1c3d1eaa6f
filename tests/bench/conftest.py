"""The bench tests train small torch models: one thread, as in tests/inference. With torch's
default two threads on a loaded 2-core machine a 400-step fit of a 300-item classifier took
57 s instead of 3.6 s (thread oversubscription on tiny matrices)."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
