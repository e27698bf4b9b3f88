"""Drag-and-Drop LLMs (DnD), reproduced: prompts -> LoRA weights in one forward pass.

One module per paper stage, named like its Snakemake rule file and DVC stage: data,
base_model, zoo, generators, generate, evaluate, summary, report (docs/architecture.md);
`dnd.cli` is the command line the Snakemake rules call.
"""

__version__ = "0.1.0"
