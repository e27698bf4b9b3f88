"""The DnD method: parameter tokenization, the frozen condition encoder, the generator models and their checkpoint."""
