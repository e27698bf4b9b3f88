"""One probe of a longer-trained zoo (the `zoo_probe` target): dnd.experiments.zoo_probe.probe."""
