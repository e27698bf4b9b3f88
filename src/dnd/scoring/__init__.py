"""Scoring adapters with lm-eval: the loaded model with its LoRA slots, the seeded lm-eval call,
the score-or-cache loop and the content-keyed cache, and the lm-eval backends.

`SCORER_VERSION` is part of every score cache key: bump it whenever a change of the scoring code
can change a score (the backends, the lm-eval call, the task set-up, a parser), so that cached
scores are recomputed; a refactor that does not change scores keeps the caches (the keys hash what
determines a score, never the code's file names or bytes). `dnd verify-cache` checks that claim.

Importing this package makes Hugging Face offline (the one place that does): a scoring job reads
only local files and must never reach the Hub. It must precede the datasets/lm_eval imports.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

# 2: adapters merged into the base weights (bf16 rounding of W0 + s*B@A), chunked logsumexp
SCORER_VERSION = 2
