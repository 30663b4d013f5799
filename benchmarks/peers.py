"""What the benchmarks' transformers peers share: the BERT config of a jaxssl model, and
PyTorch's AdamW set up as jaxssl's (decay on matrices only, fused kernel, linear schedule)."""


def bert_config(transformers, model_config, **fields):
  """transformers' BertConfig of the same model; ``fields`` override (attention, dropout)."""
  return transformers.BertConfig(
      **{
          "vocab_size": model_config.vocab_size,
          "hidden_size": model_config.hidden_size,
          "num_hidden_layers": model_config.num_layers,
          "num_attention_heads": model_config.num_heads,
          "intermediate_size": model_config.mlp_dim,
          "hidden_act": "gelu",  # exact GELU, as jaxssl's encoder
          "hidden_dropout_prob": model_config.dropout_rate,
          "attention_probs_dropout_prob": model_config.attention_dropout_rate,
          "max_position_embeddings": model_config.max_position,
          "type_vocab_size": model_config.type_vocab_size,
          "layer_norm_eps": model_config.layer_norm_eps,
          **fields
      })


def adamw(torch, transformers, parameters, config):
  """(optimizer, schedule): fused AdamW over ``parameters`` with weight decay on matrices only,
  and linear warm-up and decay, from ``config``'s optimizer fields."""
  optimizer = torch.optim.AdamW([{
      "params": [p for p in parameters if p.ndim > 1],
      "weight_decay": config.weight_decay
  }, {
      "params": [p for p in parameters if p.ndim <= 1],
      "weight_decay": 0.0
  }],
                                lr=config.learning_rate,
                                betas=(config.adam_b1, config.adam_b2),
                                eps=config.adam_eps,
                                fused=True)
  schedule = transformers.get_linear_schedule_with_warmup(optimizer, config.warmup_steps,
                                                          config.num_train_steps)
  return optimizer, schedule
