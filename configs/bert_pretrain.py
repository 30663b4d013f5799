"""BERT pretraining: masked-language modelling (+ next-sentence prediction).

    python -m jaxssl.main --config=configs/bert_pretrain.py --workdir=/tmp/bert

The argument picks a recipe, e.g. ``configs/bert_pretrain.py:size=base``:
  size=mini  (default) 4 layers, hidden 256, sequences of 64 tokens, 700 steps on the
             English corpus shipped in the package: under 10 minutes on 2 CPU cores.
  size=tiny  2 layers, hidden 128, for tests and smoke runs.
  size=base  the BERT-base recipe of Devlin et al. (2019) for accelerators: 12 layers,
             hidden 768, 30522 WordPiece-sized vocabulary, batch 256, 1M steps, lr 1e-4 with
             10k warm-up steps, on Wikipedia (needs network to download and prepare it).
  size=small, medium, large: the other presets of jaxssl.models.bert.PRESETS on the
             mini recipe (large uses the base recipe).
``nsp=False`` turns next-sentence prediction off: ``configs/bert_pretrain.py:size=mini,nsp=False``.
``recipe=cpu`` is the CPU pretraining recipe of README "A CPU pretraining recipe": the mini
model without NSP on sequences of 128 tokens (every position a fine-tuning row of up to 128
tokens reads is trained) for 2,400 steps, 42 minutes alone on 2 CPU cores. Its probes rise
above its random initialisation's, but it fine-tunes better than random weights on only 3 of
the suite's 6 metrics (worse on rating and QA). The default (``recipe=demo``) is the 7-minute
run that shows the mechanics.
``objective=electra`` trains the same encoder by ELECTRA's replaced-token detection instead
(jaxssl.core.objectives.electra: a generator a quarter as wide, no NSP), e.g.
``configs/bert_pretrain.py:objective=electra``; fine-tuning reads its encoder as a BERT's.
``corpus=`` picks the shipped corpus of the CPU recipes: ``en`` (default), ``zh``, or
``bilingual``: English and Chinese together, with one SentencePiece vocabulary of 16000 pieces
trained on both (``configs/bert_pretrain.py:corpus=bilingual``). Adding
``--config.train_split=train[:25%]`` pretrains on a quarter of the training documents.
Every field can also be set on the command line: ``--config.num_train_steps=100``.
"""

import ml_collections

from jaxssl.configs import common

ACCELERATOR_SIZES = ("base", "large")
CORPORA = ("en", "zh", "bilingual")  # jaxssl_corpus configs the corpus= argument may name
OBJECTIVES = ("bert", "electra")  # what the objective= argument may name
RECIPES = ("demo", "cpu")  # what the recipe= argument may name (CPU sizes only)
# recipe=cpu: the fields it sets over the mini preset's; nsp defaults to False with it.
CPU_RECIPE = dict(
    max_seq_length=128,
    max_predictions_per_seq=20,
    num_train_steps=2400,
    warmup_steps=100,
    probe_every=400,
    eval_every=400,
    checkpoint_every=400)


def get_config(arg=None):
  options = common.parse_arg(arg, size="mini", nsp="", corpus="en", objective="bert", recipe="demo")
  size, corpus, objective = options["size"], options["corpus"], options["objective"]
  if objective not in OBJECTIVES:
    raise ValueError(f"config argument objective={objective!r}: use one of {OBJECTIVES}.")
  accelerator = size in ACCELERATOR_SIZES
  if options["recipe"] not in RECIPES:
    raise ValueError(f"config argument recipe={options['recipe']!r}: use one of {RECIPES}.")
  cpu_recipe = options["recipe"] == "cpu"
  if cpu_recipe and accelerator:
    raise ValueError(f"recipe=cpu is for the CPU sizes; size={size} has its own recipe.")
  nsp = options["nsp"].lower() == "true" if options["nsp"] else not cpu_recipe
  if corpus not in CORPORA:
    raise ValueError(f"config argument corpus={corpus!r}: use one of {CORPORA}.")
  if accelerator and corpus != "en":
    raise ValueError(
        f"size={size} pretrains on Wikipedia; set --config.dataset instead of corpus=.")
  config = ml_collections.ConfigDict()

  # The pretraining objective (jaxssl.core.objectives.OBJECTIVES): "bert" (MLM, + NSP if nsp) or
  # "electra" (replaced-token detection, no NSP).
  config.objective = objective
  config.seed = 0  # Seeds parameters, instance creation, masking and dropout.

  # Data.
  # TFDS name (jaxssl_corpus/bilingual: the English and Chinese documents, shuffled together),
  # or your own text: a path, folder or glob of .txt/.jsonl/.parquet files, or hf:NAME[/CONFIG]
  # (jaxssl.data.sources).
  config.dataset = "wikipedia/20230601.en" if accelerator else f"jaxssl_corpus/{corpus}"
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
  # Tokens per example, [CLS] A [SEP] B [SEP] + padding (64 on CPU: twice the updates per second).
  config.max_seq_length = 128 if accelerator else 64
  # Masked positions per example (MLM logits are computed only there).
  config.max_predictions_per_seq = 20 if accelerator else 10
  config.short_seq_prob = 0.1  # Chance of a shorter target length (BERT: less train/test mismatch).
  config.mask_prob = 0.15  # Share of tokens to predict (80% [MASK], 10% random, 10% kept).
  # Next-sentence prediction on/off (off: B always follows A; ELECTRA has none).
  config.nsp = nsp and objective == "bert"
  if objective == "electra":
    config.generator_size = 0.25  # The generator's width, a fraction of the encoder's (ELECTRA's).
    config.discriminator_weight = 50.0  # Replaced-token loss weight beside the MLM loss (ELECTRA's).

  # Start from a published checkpoint instead of random weights: a name ("minilm"), a Hugging
  # Face directory or a .gguf file (jaxssl.pretrained). Its model config and tokenizer replace
  # the model, vocab_size and tokenizer fields below, except model dtypes and dropout rates.
  config.init_from = ""

  # Tokenizer.
  # SentencePiece vocabulary = embedding rows. Bilingual: 16000, since about 3,200 characters,
  # nearly all Han, each need a piece of their own to cover 99.95% of the corpus's characters.
  config.vocab_size = 30522 if accelerator else (16000 if corpus == "bilingual" else 8000)
  config.tokenizer = ""  # Path to an existing SentencePiece model; "" trains one into the workdir.

  # Model: a preset size, and the fields that any preset may override.
  config.model = ml_collections.ConfigDict()
  config.model.size = size  # Preset in jaxssl.models.bert.PRESETS.
  config.model.max_position = 512  # Rows of the position table (max_seq_length may not exceed it).
  config.model.dropout_rate = 0.1 if accelerator else 0.0  # Hidden dropout (0 for short CPU runs).
  config.model.attention_dropout_rate = 0.1 if accelerator else 0.0  # Attention-prob dropout.
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
  config.batch_size = 256 if accelerator else 32  # Global batch (split over data x fsdp devices).
  config.num_train_steps = 1_000_000 if accelerator else 700  # Optimizer updates.
  config.learning_rate = 1e-4 if accelerator else 1e-3  # Peak learning rate.
  config.warmup_steps = 10_000 if accelerator else 70  # Linear warm-up from 0.
  config.final_lr_fraction = 0.0  # Learning rate at the last step, relative to the peak.
  config.lr_decay = "linear"  # After warm-up: "linear" (BERT) or "cosine" to that fraction.
  config.warmup_ratio = 0.0  # > 0: warm up for this fraction of num_train_steps instead.
  config.weight_decay = 0.01  # AdamW decay (not on biases and LayerNorm).
  config.adam_b1 = 0.9  # AdamW first-moment decay.
  config.adam_b2 = 0.999  # AdamW second-moment decay.
  config.adam_eps = 1e-6  # AdamW epsilon.
  config.max_grad_norm = 1.0  # Global-norm gradient clipping.
  # Micro-batches per update: the global batch is split into this many, their gradients summed
  # (the same update as one batch, with a micro-batch's activation memory).
  config.grad_accumulation_steps = 1

  # Frozen-feature probes (jaxssl.core.probes) on shipped labelled data, of the weights the run
  # starts from, every probe_every steps and at the end: logistic regression on the encoder's
  # features per task, and the mean cosine between token vectors (near 1: collapsed). A few
  # seconds each on the CPU; "" turns them off.
  config.probe_tasks = {
      "en": "sentiment,pos",
      "zh": "sentiment_zh",
      "bilingual": "sentiment,sentiment_zh,pos"
  }[corpus]
  config.probe_every = 10_000 if accelerator else 175  # Steps between probes.

  # Loop, evaluation, checkpoints.
  config.log_every = 1000 if accelerator else 25  # Steps between train metric records.
  # Model-FLOPs utilisation, logged per record: model FLOP/s over this peak per chip; 0: the
  # chip's datasheet bf16 peak (jaxssl.core.flops) when model.dtype is bfloat16, else no MFU.
  config.peak_flops_per_chip = 0.0
  # "first,last": a jax.profiler trace of those steps, written to <workdir>/profile.
  config.profile_steps = ""
  config.eval_every = 10_000 if accelerator else 175  # Steps between evaluations (and at the end).
  config.eval_batches = 50 if accelerator else 16  # Validation batches per eval (fixed examples).
  config.checkpoint_every = 10_000 if accelerator else 175  # Steps between checkpoints (+ the end).
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
      "heads": "tensor",  # Attention heads (flattened heads x head_dim).
      "kv_heads": "tensor",  # Key/value heads of grouped-query attention (decoders).
      "vocab": "tensor",  # Vocabulary rows of the embedding and MLM bias.
  })
  if cpu_recipe:
    config.update(CPU_RECIPE)
  return config
