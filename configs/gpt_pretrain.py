"""GPT pretraining: next-token prediction on documents packed into full rows.

    python -m jaxssl.main --config=configs/gpt_pretrain.py --workdir=/tmp/gpt
    python -m jaxssl.generate --workdir=/tmp/gpt --prompt="The whale"

The argument picks a recipe, e.g. ``configs/gpt_pretrain.py:size=gpt2``:
  size=mini  (default) 4 layers, hidden 256, GPT-2 style (pre-LN, learned positions, GELU,
             tied embeddings) on the English corpus shipped in the package; about 10 minutes
             on 2 CPU cores.
  size=tiny  2 layers, hidden 128, for tests and smoke runs.
  size=llama-tiny  the Llama family (rotary positions, RMSNorm, SwiGLU, grouped-query
             attention, untied output) at tiny size.
  size=gpt2  GPT-2 small (124M) for accelerators: 12 layers, hidden 768, context 1024,
             batch 512, lr 6e-4 with 2000 warm-up steps, bf16 compute, FSDP, on Wikipedia.
Every field can also be set on the command line: ``--config.model.positions=rotary``.
"""

import ml_collections

from jaxssl.configs import common

ACCELERATOR_SIZES = ("gpt2",)


def get_config(arg=None):
  size = common.parse_arg(arg, size="mini")["size"]
  accelerator = size in ACCELERATOR_SIZES
  config = ml_collections.ConfigDict()

  config.objective = "gpt"  # The pretraining objective (jaxssl.core.objectives.OBJECTIVES).
  config.seed = 0  # Seeds parameters, document order and dropout.

  # Data.
  # TFDS name, or your own text: a path, folder or glob of .txt/.jsonl/.parquet files, or
  # hf:NAME[/CONFIG] (jaxssl.data.sources).
  config.dataset = "wikipedia/20230601.en" if accelerator else "jaxssl_corpus/en"
  # TFDS data dir (None: TFDS's default, ~/tensorflow_datasets).
  config.data_dir = ml_collections.FieldReference(None, field_type=str)
  config.text_key = "text"  # Feature (JSONL field, Parquet column) holding each document's text.
  config.txt_documents = "file"  # A .txt file's documents: the whole "file", or each "paragraph".
  # Where splits tokenized once are kept for later runs (jaxssl.data.prepared); "": the
  # $JAXSSL_CACHE directory, else ~/.cache/jaxssl, then prepared/.
  config.prepared_dir = ""
  # Documents shuffled, paired or packed and batched together: host memory holds one window's
  # tokens and examples, whatever the corpus size (lower it for long documents; see
  # jaxssl.data.batching.StreamBatches).
  config.window_documents = 2_000
  # TFDS splits to pretrain and evaluate on (Wikipedia and local files have only "train": hold
  # 1% of it out).
  config.train_split = "train[1%:]" if accelerator else "train"
  config.eval_split = "train[:1%]" if accelerator else "validation"
  config.max_seq_length = 1024 if accelerator else 128  # Tokens per packed row.

  # Start from a published checkpoint instead of random weights: a name ("smollm2"), a Hugging
  # Face directory or a .gguf file (jaxssl.pretrained). Its model config and tokenizer replace
  # the model, vocab_size and tokenizer fields below, except model dtypes and dropout rates.
  config.init_from = ""

  # Tokenizer.
  config.vocab_size = 32768 if accelerator else 8000  # SentencePiece vocabulary = embedding rows.
  config.tokenizer = ""  # Path to an existing SentencePiece model; "" trains one into the workdir.

  # Model: a preset size, and the fields that any preset may override.
  config.model = ml_collections.ConfigDict()
  config.model.size = size  # Preset in jaxssl.models.gpt.PRESETS.
  config.model.max_position = 1024 if accelerator else 512  # Longest prompt + generation.
  # Architecture switches (None: the preset's): "layernorm"/"rmsnorm", "learned"/"rotary",
  # "gelu"/"gelu_tanh"/"swiglu", and fewer key/value than query heads for grouped-query attention.
  config.model.norm = ml_collections.FieldReference(None, field_type=str)
  config.model.positions = ml_collections.FieldReference(None, field_type=str)
  config.model.mlp = ml_collections.FieldReference(None, field_type=str)
  config.model.num_kv_heads = ml_collections.FieldReference(None, field_type=int)
  config.model.dropout_rate = 0.0  # Embedding and residual dropout (GPT-2 used 0.1).
  config.model.dtype = "bfloat16" if accelerator else "float32"  # Compute dtype.
  config.model.param_dtype = "float32"  # Storage dtype of parameters and optimizer state.
  # Recompute block activations in the backward pass instead of storing them (less memory, more
  # compute): "none", "full", "dots_saveable" or "dots_with_no_batch_dims_saveable" (what is
  # kept; jaxssl.models.layers.REMAT_POLICIES).
  config.model.remat = "none"
  config.model.scan_layers = False  # Run the blocks as one jax.lax.scan: compile 1 block, not L.
  # jax.nn.dot_product_attention's backend: "xla", or "cudnn" (fused flash attention; NVIDIA
  # GPUs with bfloat16 compute).
  config.model.attention_implementation = "xla"

  # Optimisation.
  config.batch_size = 512 if accelerator else 16  # Global batch of packed rows.
  config.num_train_steps = 600_000 if accelerator else 600  # Optimizer updates.
  config.learning_rate = 6e-4 if accelerator else 2e-3  # Peak learning rate.
  config.warmup_steps = 2000 if accelerator else 60  # Linear warm-up from 0.
  config.final_lr_fraction = 0.1  # Learning rate at the last step, relative to the peak.
  config.lr_decay = "linear"  # After warm-up: "linear" (BERT) or "cosine" to that fraction.
  config.warmup_ratio = 0.0  # > 0: warm up for this fraction of num_train_steps instead.
  config.weight_decay = 0.1  # AdamW decay (not on biases and norms).
  config.adam_b1 = 0.9  # AdamW first-moment decay.
  config.adam_b2 = 0.95  # AdamW second-moment decay.
  config.adam_eps = 1e-8  # AdamW epsilon.
  config.max_grad_norm = 1.0  # Global-norm gradient clipping.
  # Micro-batches per update: the global batch is split into this many, their gradients summed
  # (the same update as one batch, with a micro-batch's activation memory).
  config.grad_accumulation_steps = 1

  # Loop, evaluation, checkpoints.
  config.log_every = 1000 if accelerator else 25  # Steps between train metric records.
  # Model-FLOPs utilisation, logged per record: model FLOP/s over this peak per chip; 0: the
  # chip's datasheet bf16 peak (jaxssl.core.flops) when model.dtype is bfloat16, else no MFU.
  config.peak_flops_per_chip = 0.0
  # "first,last": a jax.profiler trace of those steps, written to <workdir>/profile.
  config.profile_steps = ""
  config.eval_every = 10_000 if accelerator else 150  # Steps between evaluations (and at the end).
  config.eval_batches = 50 if accelerator else 16  # Validation batches per evaluation.
  config.checkpoint_every = 10_000 if accelerator else 150  # Steps between checkpoints (+ the end).
  config.keep_checkpoints = 3  # Checkpoints kept on disk (oldest deleted).

  # Parallelism: mesh axis sizes (product = device count; one may be -1) and how logical
  # parameter axes map onto them (None = replicated).
  config.mesh = ml_collections.ConfigDict({
      "data": 1 if accelerator else -1,
      "fsdp": -1 if accelerator else 1,
      "tensor": 1
  })
  config.logical_axis_rules = ml_collections.ConfigDict({
      "embed": "fsdp",  # Hidden dimension of every weight: sharded for FSDP.
      "mlp": "tensor",  # MLP inner dimension.
      "heads": "tensor",  # Query heads (flattened heads x head_dim).
      "kv_heads": "tensor",  # Key/value heads of grouped-query attention.
      "vocab": "tensor",  # Vocabulary rows of the embedding and output projection.
  })
  return config
