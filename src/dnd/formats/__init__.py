"""Formats of the items: the prompt templates lm-eval scores and LoRAs train on (cloze/letter, the paper's, ChatML
chat)."""
