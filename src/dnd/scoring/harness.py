"""The one seeded lm-eval call every scorer makes."""

from __future__ import annotations

import random
from typing import Any

# lm-eval's own defaults (lm_eval.defaults), applied before every scoring call as simple_evaluate does
LMEVAL_RANDOM_SEED = 0
LMEVAL_OTHER_SEED = 1234


def seeded_evaluate(lm: Any, task_dict: dict, limit: int | None = None) -> dict:
    """lm-eval's own evaluation loop (`lm_eval.evaluator.evaluate`, per-item samples logged, no
    bootstrap) on a built model, seeded as simple_evaluate seeds it."""

    import numpy as np
    import torch
    from lm_eval import evaluator

    random.seed(LMEVAL_RANDOM_SEED)
    np.random.seed(LMEVAL_OTHER_SEED)
    torch.manual_seed(LMEVAL_OTHER_SEED)
    return evaluator.evaluate(lm=lm, task_dict=task_dict, limit=limit, bootstrap_iters=0, log_samples=True)
