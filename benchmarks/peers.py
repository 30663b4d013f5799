"""What the benchmarks' transformers peers share: the transformers config of a jaxssl model (as
jaxssl's export writes it), and PyTorch's AdamW set up as jaxssl's (decay on matrices only,
fused kernel, linear schedule)."""

from jaxssl.convert import hf_bert
from jaxssl.convert import hf_gpt


def bert_config(transformers, model_config, **fields):
  """transformers' BertConfig of the same model (``jaxssl.convert.hf_bert``'s config.json);
  ``fields`` override (attention, dropout)."""
  return transformers.BertConfig.from_dict({
      **hf_bert.hf_config(model_config, "BertForPreTraining"),
      **fields
  })


def gpt2_config(transformers, model_config, **fields):
  """transformers' GPT2Config of the same model (``jaxssl.convert.hf_gpt``'s config.json);
  ``fields`` override (attention, dropout)."""
  return transformers.GPT2Config.from_dict({**hf_gpt.hf_config(model_config), **fields})


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
