"""Drag-and-Drop LLMs (DnD), reproduced: prompts -> LoRA weights in one forward pass.

One module per concern: config, data, prompts, basemodel, lora, tokenization, encoder,
model, training, generation, evaluation, report; `dnd.cli` is the command line the
Snakemake rules call.
"""

__version__ = "0.1.0"
