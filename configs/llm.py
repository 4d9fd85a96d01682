"""The selection comparison on `rt` with an LLM target: SmolLM2-135M-Instruct fine-tuned as a classifier with LoRA.

    python -m rlsel.main --config=configs/llm.py --workdir=runs/llm            # CPU settings (estimated 1.5 h)
    python -m rlsel.main --config=configs/llm.py:gpu --workdir=runs/llm_gpu    # GPU settings (seeds 0-4)
    python -m rlsel.main --config=configs/llm.py --config.data.max_examples=600 --config.selectors=full,random \
        --config.finetune.max_steps=4 --config.finetune.min_steps=4 --config.finetune.eval_every=2 \
        --workdir=/tmp/llm_smoke                                                # smoke test: 5 min on one core

Only the fine-tuned target changes (rlsel/target/llm.py): SmolLM2's last real token (EOS) into a linear head, LoRA
rank 8 on the attention projections, the base frozen. Selectors still see the frozen MiniLM pool embeddings, and
the RL proxy stays the MiniLM-embedding head (`proxy.kind="head"`).

Length: 48 SmolLM2 tokens. rt's 95th percentile is 44 BPE tokens (median 24, 99th 54; +1 for EOS), so 48 keeps
all of 97% of the texts.

CPU (the default here): one SmolLM2 + LoRA(q, v) rank-8 training step at batch 16 x 48 took 7.7 s on one shared
core (99 tokens/s; 333 GFLOP a step by forward_flops_per_token: 216.6 MFLOP a token forward, x2.0 with LoRA),
and the forward pass 5 examples/s, so a validation pass over rt's 1,020 examples costs 3-4 min (2026-12-02).
Hence: 60 steps a cell (min = max, also for full data, whose cap is recorded in results.json), validation every
30 steps, and full, random and rl_ppo on 2 paired seeds (0, 1): an estimated 12-15 min a cell on 2 cores, so about
1.5 h in all. Learning rate 5e-3, chosen on validation accuracy after 60 steps (2026-12-02, one core each): 5e-4
left the model at chance (full data: val 0.577, train loss 0.706 at step 60), 2e-3 gave val 0.692 and 5e-3 val
0.777 on a random 5% subset (seed 0); a ridge probe on the frozen last-token features reaches 0.725 on 200 held-out
examples, so the features carry the signal and the short budget needs the high rate. Larger rates were not tried;
`:gpu` keeps 5e-3 untested at its 200-300 steps, so check a lower rate on validation there.

GPU (`:gpu`): bfloat16 compute with the frozen base stored in bf16, LoRA rank 16 on q, k, v, o, batch 32, at
least 200 and at most 300 steps with validation every 40 (configs/benchmark.py's protocol), the benchmark's
selectors and seeds 0-4. The gradient selectors (less, learnalign, cropi) can be added: they take per-example
gradients of the adapters and head (`selection.param_scope=lora`, as LESS).
"""

from rlsel.configlib import base_config

CPU_SELECTORS = ("full", "random", "rl_ppo")  # the comparison issue 21 asks for, on 2 paired seeds
GPU_SELECTORS = ("full", "random", "cluster_stratified", "ccs", "label_clean", "kcenter", "rl_ppo", "climb")
MAX_LENGTH = 48      # SmolLM2 tokens: rt's 95th percentile 44, +1 EOS (see the docstring)
CPU_STEPS = 60       # fine-tune steps a cell on CPU (min = max)
CPU_EVAL_EVERY = 30  # validation passes are the other half of a CPU cell's time
GPU_MIN_STEPS = 200  # as configs/benchmark.py
GPU_MAX_STEPS = 300
GPU_EVAL_EVERY = 40
LORA_LEARNING_RATE = 5e-3  # chosen on validation (see the docstring)


def get_config(arg: str = None):
  c = base_config()
  c.task = "rt"
  c.tasks = ("rt",)
  c.budget = 0.05
  c.target.kind = "smollm2"
  c.target.max_length = MAX_LENGTH
  c.target.pooling = "last"
  c.target.lora_rank = 8
  c.target.lora_alpha = 16.0
  c.target.lora_targets = ("q", "v")
  c.finetune.learning_rate = LORA_LEARNING_RATE
  c.selection.param_scope = "lora"  # what trains: the adapters and the head (the frozen base's gradients say nothing)
  if arg == "gpu":
    c.selectors = GPU_SELECTORS
    c.seeds = (0, 1, 2, 3, 4)
    c.target.dtype = "bfloat16"
    c.target.lora_rank = 16
    c.target.lora_alpha = 32.0
    c.target.lora_targets = ("q", "k", "v", "o")
    c.finetune.batch_size = 32
    c.finetune.min_steps = GPU_MIN_STEPS
    c.finetune.max_steps = GPU_MAX_STEPS
    c.finetune.eval_every = GPU_EVAL_EVERY
  elif arg:
    raise ValueError(f"unknown llm variant {arg!r}; use configs/llm.py (CPU) or configs/llm.py:gpu")
  else:
    c.selectors = CPU_SELECTORS
    c.seeds = (0, 1)
    c.finetune.batch_size = 16
    c.finetune.min_steps = CPU_STEPS
    c.finetune.max_steps = CPU_STEPS
    c.finetune.eval_every = CPU_EVAL_EVERY
  return c
