"""The base run config: every field rlsel reads, with its default and meaning.

`configs/*.py` start from `base_config()` and change what their experiment needs; the result is locked by
`rlsel.main`, so a misspelt override (`--config.budgte=0.1`) fails instead of being ignored. Modules never mutate it.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "rt"                      # offline: tweets, rt, rt_subj, bbc; hub: sst2, cola, mrpc, rte, qnli, qqp, mnli; or "file"
  c.selectors = ("full", "random")   # run in this order, each through select -> ids -> fine-tune -> evaluate
  c.seeds = (0,)                     # one cell per (selector, task, seed)
  c.budget = 0.05                    # fraction of the pool to select, in (0, 1]
  c.log_every = 25                   # fine-tune steps between progress lines

  c.data = ml_collections.ConfigDict()
  c.data.split_seed = 0              # seed of the stratified train/validation/test split (fixed across run seeds)
  c.data.validation_fraction = 0.1
  c.data.test_fraction = 0.1
  c.data.max_examples = -1           # >0: stratified subsample of the corpus before splitting (debug/tests)
  c.data.glue_path = "nyu-mll/glue"  # hub dataset id, or a local folder laid out as <task>/<split>-*.parquet
  c.data.train_file = ""             # task="file": the user's CSV / JSONL / parquet files
  c.data.validation_file = ""        # optional; carved from train_file when empty
  c.data.test_file = ""              # optional; carved from train_file when empty
  c.data.text_column = "text"
  c.data.text_pair_column = ""       # second text of a pair task, if any
  c.data.label_column = "label"

  c.features = ml_collections.ConfigDict()
  c.features.max_length = 48         # tokens per example for the target and the frozen encoder
  c.features.batch_size = 256        # frozen-encoder batch when embedding the pool

  c.target = ml_collections.ConfigDict()
  c.target.kind = "minilm"           # "minilm": pretrained all-MiniLM-L6-v2; "tiny": small random-init BERT (tests)
  c.target.hidden_size = 384         # used by kind="tiny" only (minilm reads its own config)
  c.target.num_layers = 6
  c.target.num_heads = 12
  c.target.intermediate_size = 1536
  c.target.dropout = 0.1
  c.target.dtype = "float32"         # compute dtype: "bfloat16" on GPU/TPU; params stay float32

  c.finetune = ml_collections.ConfigDict()
  c.finetune.batch_size = 32
  c.finetune.eval_batch_size = 128
  c.finetune.learning_rate = 5e-5
  c.finetune.weight_decay = 0.01
  c.finetune.warmup_fraction = 0.1   # linear warmup share of the planned steps, then linear decay to 0
  c.finetune.grad_clip = 1.0         # global-norm clipping
  c.finetune.epochs = 3              # passes over the selected subset ...
  c.finetune.max_steps = 300         # ... capped at this many steps (the cap is recorded in results.json)
  c.finetune.eval_every = 50         # steps between validation evaluations (early stopping, best checkpoint)
  c.finetune.patience = 3            # evaluations without improvement before stopping
  return c


def lock(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  config.lock()
  return config
