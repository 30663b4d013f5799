"""jaxssl: self-supervised pretraining and fine-tuning of BERT and GPT in JAX/Flax.

Programs (``python -m jaxssl.main``, ``predict``, ``generate``, ``prompting``, ``suite``,
``sharding_report``, ``convert``, ``analysis.*``) sit over ``jaxssl.core`` (the trainer,
objectives, task kinds), which sits over ``models``, ``data`` and the one module that owns each
outside system (``checkpoint``: orbax, ``data.corpora``: TFDS, ``data.tokenizer``:
SentencePiece, ``convert``: safetensors and GGUF). README.md's Layout section maps the folders.
"""
