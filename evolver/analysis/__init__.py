"""What a lab does after an evolution (docs/analysis.md): show chosen images again (`show`), map a receptive field
(`rf`), chart the tuning landscape around an evolved code (`landscape`). Each shows a fixed set of images through the
loop's presenter and records them in a folder of its own (`showing`), resumable as a run is."""
