"""Text in, model rows out: tokenizers, datasets (shipped and from the TFDS catalog), and the
batching of pretraining pairs, packed GPT rows and fine-tuning examples."""
