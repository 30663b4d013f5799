"""Fine-tuning tasks: the catalog (``catalog.TASKS``), the kinds they are of (``kinds.KINDS``:
head, encoding, metrics, baseline, prediction records) and the heads themselves."""
