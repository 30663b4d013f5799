"""BERT fine-tuning: a pretrained encoder plus a small head, on one task.

    python -m jaxssl.main --config=configs/bert_finetune.py --workdir=/tmp/sentiment

The argument picks a task (jaxssl.core.tasks.catalog.TASKS), e.g. ``configs/bert_finetune.py:task=pos``.
Shipped with the package:
  task=sentiment    (default) VADER movie-review sentences -> negative/positive (accuracy, F1,
                    Matthews correlation).
  task=rating       the same sentences -> their mean human rating, -4..+4 (Pearson, Spearman).
  task=paraphrase   KJV/WEB Bible verse pairs -> paraphrase or not, hard negatives (accuracy, F1).
  task=pos          Brown corpus words -> 12 universal part-of-speech tags (token accuracy);
                    task=pos_brown for the original Brown tags.
  task=qa           Bible cloze questions -> answer span in a WEB passage (exact match, F1).
  task=sentiment_zh Chinese review snippets -> negative/positive (accuracy, F1, Matthews).
  task=splice       DNA around splice junctions -> EI/IE/N; task=promoters (DNA) and
                    task=malonylation (protein windows) likewise (config.sequence_words).
  task=essen        Chinese vs German folk-song melodies as intervals (pip install music21;
                    read from its corpus, nothing shipped).
From the TFDS catalog (network once to download): sst2, mrpc, qqp, cola, stsb, mnli, qnli, rte,
wnli (GLUE, dev = validation) and squad (v1.1); SuperGLUE's boolq, cb (accuracy, macro F1),
copa (multiple choice), multirc (F1a, per-question exact match), record (entity choice, max F1
and exact match over the answers), superglue_rte, wic, wsc, and the diagnostics axb, axg (trained
on RTE, scored on AX-b / AX-g), through jaxssl_super_glue (TFDS's builder, no TensorFlow).
On 2 CPU cores MiniLM fine-tunes at about 1.5 s per step of 16 sentences at 48 tokens
(measured beside other work), so the defaults (300 steps of batch 32 at 128 tokens) take well
over half an hour there; for a quick run add e.g. --config.train_split=train[:512]
--config.num_train_steps=30 --config.batch_size=16 --config.max_seq_length=48, or run the
whole offline suite with small budgets: python -m jaxssl.suite.
Every field can also be set on the command line: ``--config.init_from=scratch``.

``recipe=full`` (e.g. ``configs/bert_finetune.py:task=pos,recipe=full``) takes the task's
fields from ``RECIPES``: the budget the README's fine-tuning results table was made with, each
run 7 to 22 minutes with MiniLM on 2 CPU cores shared with other work.
"""

import ml_collections

from jaxssl.configs import common

# Shared by every full recipe: MiniLM's fine-tuning rate, 10% warm-up, batches of similar
# length, one evaluation (the whole dev split) at the end, so the reported score is the last
# step's and no checkpoint is chosen on the dev split it is reported on.
_FULL = dict(batch_size=32, learning_rate=1e-4, warmup_ratio=0.1, group_by_length=True)
# task -> the fields of its full recipe; num_train_steps * batch_size / train rows = epochs.
RECIPES = {
    "sentiment": dict(_FULL, max_seq_length=128, num_train_steps=460),  # 2 epochs of 7,339
    # 2 epochs of 7,339; the rate chosen among 5e-5, 1e-4, 2e-4 by seed 0's dev Pearson.
    "rating": dict(_FULL, max_seq_length=128, num_train_steps=460, learning_rate=2e-4),
    "sentiment_zh": dict(_FULL, max_seq_length=128, num_train_steps=435),  # 1 epoch of 13,891
    # 1 epoch of the first 19,200 of 49,604 pairs (9,600 in 300 steps reached 0.9753 ± 0.0004).
    "paraphrase": dict(_FULL, train_split="train[:19200]", max_seq_length=128, num_train_steps=600),
    # 1 epoch of the first 12,800 of 44,876 sentences.
    "pos": dict(_FULL, train_split="train[:12800]", max_seq_length=128, num_train_steps=400),
    # 0.44 epoch of the 22,043 windows of 128 tokens of all 6,859 questions: short windows and
    # many small updates (256-token windows at 100 steps of 32 reached only 0.33 exact match).
    "qa": dict(_FULL, batch_size=16, max_seq_length=128, doc_stride=64, num_train_steps=600),
}


def get_config(arg=None):
  options = common.parse_arg(arg, task="sentiment", recipe="")
  task, recipe = options["task"], options["recipe"]
  if recipe not in ("", "full"):
    raise ValueError(f"recipe={recipe!r} is not a recipe; use recipe=full or leave it out.")
  if recipe and task not in RECIPES:
    raise ValueError(f"task={task!r} has no full recipe; use one of {sorted(RECIPES)}.")
  config = ml_collections.ConfigDict()

  config.objective = "finetune"  # Dispatches jaxssl.main to jaxssl.core.finetune.run.
  config.task = task  # Dataset, text and label features, head and metrics (catalog.TASKS).
  config.seed = 0  # Seeds the head (and a scratch encoder), example order and dropout.

  # The encoder to fine-tune: a name or Hugging Face BERT directory (jaxssl.pretrained), a
  # jaxssl BERT pretraining workdir (its encoder and tokenizer), or "scratch": MiniLM's shape and
  # tokenizer with random weights, the baseline that shows what pretraining brings
  # ("scratch:PATH": the shape and tokenizer of PATH, any of the above, with random weights).
  config.init_from = "minilm"

  # Data.
  # TFDS data dir (None: TFDS's default, ~/tensorflow_datasets).
  config.data_dir = ml_collections.FieldReference(None, field_type=str)
  # TFDS name read instead of the task's own, with the same features ("": the task's), e.g.
  # "jaxssl_sentiment/tweets" for task=sentiment or "jaxssl_qa/squad_fixture" for task=qa.
  config.dataset = ""
  config.train_split = "train"  # TFDS split to train on; may be sliced, e.g. "train[:512]".
  config.eval_split = ""  # TFDS split to evaluate on ("": the task's dev split, "validation").
  config.max_seq_length = 128  # Tokens per row: [CLS] A [SEP] (B [SEP]), padding included.
  # A text (or tagged word list) longer than a row becomes overlapping windows of it, each a row
  # labelled as the example, starting doc_stride tokens apart; predictions average the windows'
  # outputs (tags: each word from the window where it has the most context). Of a pair, text A
  # is kept whole if it fits in half a row (else cut, and counted) and B is windowed. False: long
  # texts are cut at max_seq_length (counted as "cut" in the run's data record).
  config.sliding_windows = True
  # Pad each training batch only to the bucket (16, 24, 32, 48, 64, ... max_seq_length) its
  # longest row needs, rather than to max_seq_length: the same loss, less compute on short texts.
  # (Evaluation and prediction always do.)
  config.dynamic_padding = True
  # Fill batches with rows of similar length (sorted within runs of 50 batches), so dynamic
  # padding wastes little (Hugging Face's group_by_length).
  config.group_by_length = False

  # Tokens between the starts of consecutive windows of one text; a stride longer than a window
  # is shortened to it, so no text is skipped. QA contexts are always windowed.
  config.doc_stride = 64

  # Sequence tasks (splice, promoters, malonylation, essen): how DNA bases, amino acids or
  # melodic intervals become words before tokenization (jaxssl.data.sequence_words): "words"
  # (fixed words, A -> "we"...), "random:SEED" (random English words) or "chars" (the letters
  # themselves).
  config.sequence_words = "words"

  # Extractive QA (task=qa, squad).
  config.max_question_length = 64  # Question tokens kept (the rest are cut and counted).
  config.n_best = 20  # Candidate spans kept per window when decoding an answer.
  config.max_answer_length = 30  # Longest answer in tokens.

  # Model.
  config.dropout_rate = 0.1  # Encoder hidden dropout and the head's dropout (BERT's 0.1).
  config.attention_dropout_rate = 0.1  # Encoder attention-probability dropout.

  # Optimisation (BERT's fine-tuning recipe: AdamW, linear warm-up then decay to 0).
  config.batch_size = 32  # Examples per update (one device).
  # Micro-batches per update (a divisor of batch_size): the gradients of their mean losses are
  # averaged, so only a micro-batch's activations are held at a time.
  config.grad_accumulation_steps = 1
  config.num_train_steps = 300  # Optimizer updates (about one epoch of movie reviews at 32).
  # Peak learning rate: 2e-5..5e-5 suits a pretrained encoder; a scratch encoder learns faster
  # with about 1e-4..5e-4 (and still trails a pretrained one).
  config.learning_rate = 5e-5
  config.warmup_steps = 30  # Linear warm-up from 0 (BERT: 10% of the steps).
  config.final_lr_fraction = 0.0  # Learning rate at the last step, relative to the peak.
  config.lr_decay = "linear"  # After warm-up: "linear" (BERT) or "cosine" to that fraction.
  config.warmup_ratio = 0.0  # > 0: warm up for this fraction of num_train_steps instead.
  config.weight_decay = 0.01  # AdamW decay (not on biases and LayerNorm).
  # < 1: layer-wise learning-rate decay, the top block's rate times this, each block below it
  # times this again, the embeddings last (the head keeps the full rate).
  config.layer_lr_decay = 1.0
  config.adam_b1 = 0.9  # AdamW first-moment decay.
  config.adam_b2 = 0.999  # AdamW second-moment decay.
  config.adam_eps = 1e-6  # AdamW epsilon.
  config.max_grad_norm = 1.0  # Global-norm gradient clipping.

  # Loop and evaluation.
  config.log_every = 25  # Steps between train metric records.
  config.eval_every = 100  # Steps between dev evaluations (and one at the end).
  # Evaluations in a row without a better dev score (the task's first metric) after which the
  # run stops, keeping its best checkpoint; 0: train all num_train_steps.
  config.early_stopping_patience = 0
  # Steps between checkpoints (and one at the end, and one on SIGTERM or Ctrl-C): a rerun of
  # the same command resumes from the latest. A MiniLM checkpoint (weights and Adam moments)
  # takes about 270 MB.
  config.checkpoint_every = 100
  # The latest checkpoints kept (2: an older one if the latest is damaged). The checkpoint with the
  # best dev score on the task's first metric is kept besides: it is what predict loads.
  config.keep_checkpoints = 1
  if recipe:
    config.update(RECIPES[task])
    config.eval_every = config.num_train_steps
    config.checkpoint_every = config.num_train_steps // 4
  return config
