"""The quality benchmark's base config: MiniLM-L6 on the real GLUE files, on CPU.

`benchmarks/quality.py` plans its sweep from this file (every task, method and seed), then
applies `configs.presets.method_preset` and its own per-task budget (steps or epochs,
evaluation interval); `data.data_dir` is set there from `--data_dir`.
"""

from configs import default


def get_config():
  config = default.get_config()
  # The bundled all-MiniLM-L6-v2 (6 layers, hidden 384): trains on two CPU cores.
  config.model.checkpoint = 'sentence-transformers/all-MiniLM-L6-v2'
  config.method = 'adamix'
  config.data.task = 'sst2'
  config.data.source = 'glue_tsv'
  config.data.max_length = 128
  config.data.bucket_size = 32
  # AdaMix and the adapter baseline share one bottleneck width, so the merged AdaMix
  # model and the adapter are the same size (the quickstart's 32 for hidden size 384).
  config.adapter.adapter_size = 32
  config.batch_size = 32
  config.eval_batch_size = 64
  # The quickstart's MiniLM rate for adapter-style methods; presets set full and bitfit.
  config.learning_rate = 1e-3
  config.weight_decay = 0.01
  config.warmup_ratio = 0.06
  # Checkpoints at evaluations only (resumable there); one kept besides the best.
  config.checkpoint_every_steps = 0
  config.max_checkpoints_to_keep = 1
  config.log_every_steps = 50
  # The benchmark reads results.json; no export of the merged model.
  config.export = False
  return config
