"""Self-supervised training of the SAM embedding (``samconvex train-sam``)."""
