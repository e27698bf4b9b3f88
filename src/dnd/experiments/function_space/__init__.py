"""Beyond weight space (the `function_space` experiment, outside `all`): baselines that see labeled data."""
