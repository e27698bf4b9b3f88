"""Scoring adapters with lm-eval: the loaded model with its LoRA slots, the seeded lm-eval call,
the score-or-cache loop and the content-keyed cache, and the lm-eval backends.

Importing this package makes Hugging Face offline (the one place that does): a scoring job reads
only local files and must never reach the Hub. It must precede the datasets/lm_eval imports.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
