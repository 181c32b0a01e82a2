"""A tiny configuration for tests: a few steps on a few examples.

`model.checkpoint` must be set to a (tiny random) checkpoint directory by the caller.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.checkpoint = ''
  config.adapter.adapter_size = 4
  config.adapter.num_experts = 3
  config.adapter.lora_rank = 2
  config.data.task = 'sst2'
  config.data.max_length = 16
  config.data.bucket_size = 8
  config.data.max_train_examples = 64
  config.batch_size = 8
  config.eval_batch_size = 16
  config.num_epochs = 1
  config.num_train_steps = 6
  config.eval_every_steps = 3
  config.checkpoint_every_steps = 2
  config.log_every_steps = 2
  config.learning_rate = 1e-2
  return config
