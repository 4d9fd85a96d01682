"""The base run config: every field rlsel reads, with its default and meaning.

`configs/*.py` start from `base_config()` (or `protocol_config()`, the selector-comparison protocol) and change what
their experiment needs; the result is locked by `rlsel.main`, so a misspelt override (`--config.budgte=0.1`) fails
instead of being ignored. Modules never mutate it.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "rt"                      # offline: tweets, rt, rt_subj, bbc; GLUE: sst2, ..., mnli; "file"; "hub" (by name)
  c.selectors = ("full", "random")   # run in this order, each through select -> ids -> fine-tune -> evaluate
  c.seeds = (0,)                     # one cell per (selector, task, seed)
  c.budget = 0.05                    # fraction of the pool to select, in (0, 1]
  c.tasks = ()                       # several tasks in one run (overrides `task` when non-empty), e.g. rt,tweets
  c.sweep = ml_collections.ConfigDict()
  c.sweep.budgets = ()               # extra budget fractions for a budget sweep, e.g. (0.0625, 0.1, 0.25)
  c.sweep.selectors = ()             # the selectors run at each sweep budget

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
  c.data.hub_name = ""               # task="hub": a datasets.load_dataset id, or a local folder laid out alike
  c.data.hub_config = ""             # task="hub": the dataset's config (subset) name, if it has several
  c.data.hub_splits = ""             # task="hub": POOL[,VALIDATION[,TEST]] split names; "" = train/validation/test
  # Label noise on the pool (rlsel/data/noise.py): a share of train labels changed, seeded on its own.
  c.data.label_noise = 0.0           # exact share of pool labels changed, in [0, 1)
  c.data.noise_kind = "symmetric"    # "symmetric" | "asymmetric" (class-conditional) | "instance" (ambiguous rows)
  c.data.noise_seed = 0              # the noise's own seed (the same noisy pool for every run seed and selector)
  c.data.noise_matrix = ()           # asymmetric: K x K weights row by row (row = true class); () = the task's default
  c.data.noisy_validation = False    # True: the validation split gets its own draw of the same noise (test stays clean)
  c.data.noise_probe_steps = 300     # instance noise: the out-of-fold linear probe's full-batch Adam steps ...
  c.data.noise_probe_folds = 5       # ... its folds ...
  c.data.noise_probe_learning_rate = 0.05  # ... learning rate ...
  c.data.noise_probe_l2 = 1e-3       # ... and weight decay

  c.features = ml_collections.ConfigDict()
  c.features.max_length = 48         # tokens per example for the target and the frozen encoder
  c.features.batch_size = 256        # frozen-encoder batch when embedding the pool
  c.features.length_multiple = 16    # evaluation batches sorted by length, cut to a multiple of this (0 = full
                                     # width): the same numbers in 0.7-0.9x the evaluation time on rt; speed only

  c.target = ml_collections.ConfigDict()
  c.target.kind = "minilm"           # "minilm": pretrained all-MiniLM-L6-v2; "tiny": small random-init BERT (tests);
                                     # "smollm2": SmolLM2-135M-Instruct decoder as a classifier (rlsel/target/llm.py);
                                     # "decoder": small random-init Llama-style decoder, char tokenizer (tests)
  c.target.hidden_size = 384         # used by kind="tiny" and "decoder" only (minilm, smollm2 read their own config)
  c.target.num_layers = 6
  c.target.num_heads = 12
  c.target.num_kv_heads = 0          # kind="decoder": key/value heads (grouped-query attention); 0 = num_heads
  c.target.intermediate_size = 1536
  c.target.dropout = 0.1
  c.target.dtype = "float32"         # compute dtype: "bfloat16" on GPU/TPU; params stay float32 (but LoRA's frozen
                                     # base is stored in this dtype)
  # Decoder targets (smollm2, decoder) only: their own tokenizer and length, pooling, LoRA.
  c.target.max_length = 0            # tokens per example in the decoder's tokenizer; 0 = features.max_length
  c.target.pooling = "last"          # "last": the last real token's (EOS's) final hidden state; "mean": masked mean
  c.target.lora_rank = 0             # > 0: LoRA adapters of this rank on lora_targets, only they and the head train;
                                     # 0 = full fine-tuning
  c.target.lora_alpha = 16.0         # LoRA scale numerator: the update is (lora_alpha / lora_rank) x A B
  c.target.lora_targets = ("q", "v")  # projections with adapters: q, k, v, o (attention), gate, up, down (MLP)

  c.finetune = ml_collections.ConfigDict()
  c.finetune.enabled = True          # False: select only (selections and a diagnostics row; no target fine-tune)
  c.finetune.batch_size = 32
  c.finetune.eval_batch_size = 128
  c.finetune.learning_rate = 5e-5
  c.finetune.weight_decay = 0.01
  c.finetune.warmup_fraction = 0.1   # linear warmup share of the planned steps, then linear decay to 0
  c.finetune.grad_clip = 1.0         # global-norm clipping
  c.finetune.epochs = 3              # passes over the selected subset ...
  c.finetune.min_steps = 0           # ... but at least this many steps (a small subset trains to convergence) ...
  c.finetune.max_steps = 300         # ... and at most this many (the cap is recorded in results.json)
  c.finetune.eval_every = 50         # steps between validation evaluations (early stopping, best checkpoint)
  c.finetune.patience = 3            # evaluations without improvement before stopping

  c.mesh = ml_collections.ConfigDict()  # device mesh (rlsel/sharding.py); data * fsdp must equal the device count
  c.mesh.data = -1                   # devices on the data-parallel axis; -1 = all devices left after fsdp
  c.mesh.fsdp = 1                    # devices that shard big params (FSDP); 1 = params replicated
  c.mesh.fsdp_min_size = 2**18       # params with fewer elements stay replicated even when fsdp > 1

  c.distributed = ml_collections.ConfigDict()  # multi-host start-up (rlsel/distributed.py); defaults = auto
  c.distributed.enabled = ml_collections.config_dict.placeholder(bool)  # None: auto from env; True: always; False: never
  c.distributed.coordinator_address = ""  # host:port of process 0; "" = JAX_COORDINATOR_ADDRESS or cluster auto-detect
  c.distributed.num_processes = -1   # total processes (hosts); -1 = JAX_NUM_PROCESSES or auto-detect
  c.distributed.process_id = -1      # this process's index in [0, num_processes); -1 = JAX_PROCESS_ID or auto-detect

  # RL selectors (rl_ppo, rl_dqn, rl_reinforce): pool -> clusters -> environment -> agent -> ids (rlsel/selectors/rl.py).
  c.kmeans = ml_collections.ConfigDict()
  c.kmeans.num_clusters = 64         # actions of the environment (C)
  c.kmeans.iters = 25                # Lloyd iterations after k-means++ init
  c.kmeans.batch_size = 8192         # pool rows per distance batch (never a pool x pool array)
  c.kmeans.stratified = False        # True: cluster each label separately, clusters shared out by label frequency

  c.proxy = ml_collections.ConfigDict()
  c.proxy.kind = "head"              # "head": MLP on frozen embeddings (CPU); "transformer": first layers of the target on tokens
  c.proxy.transformer_layers = 2     # kind="transformer": encoder layers kept (MiniLM's pretrained first layers)
  c.proxy.hidden = 0                 # hidden width of the head; 0 = logistic regression
  c.proxy.steps = 30                 # fine-tune steps per proxy evaluation (inside lax.scan)
  c.proxy.incremental_steps = 0      # >0: proxy carried through the episode, this many Adam steps per env step; 0 = restart
  c.proxy.batch_size = 64            # minibatch drawn from the selected examples
  c.proxy.learning_rate = 0.05       # Adam
  c.proxy.score = "neg_log_loss"     # on the reward split: "neg_log_loss", "accuracy" or "balanced_neg_log_loss"
  c.proxy.reward_timing = "step"     # "step": reward = change in score each step; "end": final - initial score at the end
  c.proxy.reward_source = "pool"     # "pool": the reward split is carved from the pool; "validation": the validation split
  c.proxy.reward_fraction = 0.2      # share of the pool carved out (stratified) as the reward split; never selectable
  c.proxy.reward_trusted = 1.0       # <1: the reward split keeps this share of its rows (per class), those a probe fit
                                     # on the selectable rows is surest carry their given label (noisy pools)
  c.proxy.reward_subsample = 0       # >0: a fresh random subsample of this many reward examples per episode
  c.proxy.init_steps = 100           # steps of the initial proxy (random budget-sized sample) behind cluster features
  c.proxy.rescore_keys = 4           # fresh proxy keys averaged to re-score final candidates (no winner's curse)
  c.proxy.pick_share = 0.0           # >0: this share of the reward split (per class) is kept from the reward and
                                     # judges only the final pick among candidates (a search overfits its rows)
  c.proxy.pca_dim = 0                # >0: the proxy (and k-means) see the top principal components only (cheaper steps)

  c.rl = ml_collections.ConfigDict()
  c.rl.chunk = "auto"                # examples per action: "auto" = budget / episode_steps, an integer, or "cluster"
  c.rl.episode_steps = 40            # steps per episode for chunk="auto"
  c.rl.within_order = "random"       # order a cluster hands out its rows: "random" (fresh per episode) or "confident"
                                     # (highest out-of-fold probe probability of the given label first; noisy pools)
  c.rl.confident_pool = 0.0          # m >= 1: only the m x budget rows of highest such probability (per class, in the
                                     # pool's label shares) are selectable; 0 = every row outside the reward split
  c.rl.confident_pool_noise_scale = 0.0  # k > 0: the confident pool keeps at least (1 - k x the share confident
                                     # learning flags) of the rows, so a clean-looking pool is not cut to its easiest
                                     # rows (the m x budget floor holds where the flagged share is large); 0 = off
  c.rl.drop_label_issues = False     # True (protocol_config's default): rows confident learning flags as likely
                                     # mislabelled (label_clean's flags, selection.clean_filter_by) are not
                                     # selectable (applied before rl.confident_pool)
  c.rl.label_quotas = False          # True: every episode keeps the pool's label proportions (each label's clusters
                                     # share its quota, as the stratified baselines); needs kmeans.stratified=True
  c.rl.coverage_share = 0.0          # s in [0, 1): every episode starts with s x budget examples drawn at random
                                     # within the clusters in proportion to their sizes (cluster_stratified's take);
                                     # the actions choose the rest (rl.episode_steps steps); not with label_quotas
  c.rl.size_prior = 0.0              # w >= 0: the policy's logits get + w x log(rows left in each cluster), so an
                                     # untrained policy (w = 1) draws clusters in proportion to their rows, as a
                                     # stratified random subset does, not uniformly; PPO / REINFORCE (not DQN)
  c.rl.num_envs = 16                 # parallel episodes per update (vmap)
  c.rl.num_updates = 30              # PPO / REINFORCE updates; DQN rollout rounds
  c.rl.update_epochs = 4             # PPO epochs per update
  c.rl.num_minibatches = 4           # PPO minibatches per epoch
  c.rl.learning_rate = 1e-3          # Adam, for every agent
  c.rl.max_grad_norm = 0.5           # global-norm clipping of agent gradients
  c.rl.gamma = 1.0                   # fixed-length episodes and a telescoping score: no discount by default
  c.rl.gae_lambda = 0.95
  c.rl.clip_eps = 0.2                # PPO ratio clip
  c.rl.ent_coef = 0.01               # entropy bonus (PPO, REINFORCE)
  c.rl.vf_coef = 0.5                 # value-loss weight (PPO, REINFORCE baseline)
  c.rl.reward_scale = 10.0           # rewards are multiplied by this before the agent sees them
  c.rl.hidden = 64                   # width of the per-cluster and context MLPs
  c.rl.greedy_every = 5              # updates between greedy-policy episodes on the learning curve (0 = none)
  c.rl.keep_best = 4                 # best sampled episodes kept as candidates for the final pick (re-scored)
  c.rl.dqn_buffer = 4096             # replay transitions held in JAX arrays
  c.rl.dqn_batch = 64                # replay minibatch
  c.rl.dqn_grad_steps = 16           # gradient steps per rollout round
  c.rl.dqn_target_every = 2          # rounds between target-network copies
  c.rl.dqn_eps_start = 1.0           # epsilon-greedy, decayed linearly over the rounds
  c.rl.dqn_eps_end = 0.05
  c.rl.surrogate_share = 1.0         # share of PPO updates scored by the real proxy; the rest by the surrogate MLP
  c.rl.surrogate_hidden = 64         # surrogate MLP width
  c.rl.surrogate_buffer = 2048       # (mask features, score) pairs kept for the surrogate
  c.rl.surrogate_steps = 50          # surrogate gradient steps after each real-proxy update
  c.rl.surrogate_lr = 1e-3
  c.rl.log_every = 5                 # updates between progress lines on stdout (0 = silent)
  c.rl.checkpoint_every = 10         # updates between orbax checkpoints of the agent's train state (0 = one jit, none)
  c.rl.fast_compile = False          # True: XLA backend optimisation off for the RL jits (half the compile, slower run)

  # Literature selectors (rlsel/selectors/{gradients,less,learnalign,cropi,dots,heuristics}.py).
  c.selection = ml_collections.ConfigDict()
  c.selection.label_balanced = True  # less, learnalign, cropi, dots, entropy: top (dots: its draw) of each label's
                                     # share of the budget (pool proportions). False = the whole pool, as in the
                                     # papers; on rt that filled 507 (LESS) and 488 (LearnAlign) of 510 picks with one
                                     # class, and dots drew 4 of 85 from a 24% class of bbc
  c.selection.param_scope = "last_k"  # which params get per-example gradients: "head", "last_k" (head + last k
                                     # layers), "lora" (head + LoRA adapters of a decoder target), "all". Not "head":
                                     # a linear head's unit gradients are class-signed embeddings, so LESS ranked by
                                     # typicality (Spearman -0.77 with the loss on rt; last layer -0.44; RESULTS.md)
  c.selection.last_k = 1             # layers added to the head when param_scope="last_k" (MiniLM: 1.78M parameters)
  c.selection.head_patterns = ("head",)  # a param path containing any of these belongs to the head
  c.selection.layer_pattern = r"layers?_(\d+)"          # regex whose first group is a param path's layer number
  c.selection.projection_dim = 8192  # width of the gradient features (LESS's 8,192); a scope with no more
                                     # coordinates than this is not projected (the raw gradient)
  c.selection.projection_kind = "kronecker"  # "kronecker": A^T G B per weight matrix (LoGra-style; cheap for whole
                                     # layers); "rademacher" / "gaussian": a dense JL map
  c.selection.projection_block = 2048  # projection rows generated at once (memory ~ block x d floats)
  c.selection.cropi_sparse = False   # CROPI: True = the reference's map (keep sparse_coords coordinates, then a dense
                                     # Gaussian); on the last layer's 1.78M coordinates that took 42.8 s per 32 rows
                                     # on a shared core against 2.0 s for the Kronecker map, so False uses
                                     # projection_kind as the other gradient selectors do
  c.selection.sparse_coords = 65536  # CROPI with cropi_sparse: coordinates kept before its Gaussian projection
  c.selection.grad_batch_size = 32   # examples per jitted per-example-gradient batch
  c.selection.eval_batch_size = 128  # examples per jitted forward batch (probabilities)
  c.selection.progress = True        # progress lines on stderr during per-example gradient passes
  c.selection.warmup_fraction = 0.05  # share of the pool (stratified random) the model is warmed up on
  c.selection.warmup_epochs = 4      # warm-up epochs at least (LESS's 4)
  c.selection.warmup_steps = 200     # and at least this many Adam steps (more epochs if needed): 4 epochs of 5% gave
                                     # 64 steps on rt and 11 on bbc; a random 5% of rt reaches its validation plateau
                                     # by 200 (steps curve, benchmarks/RESULTS.md), so the warmed model has seen the task
  c.selection.warmup_checkpoints = 4  # checkpoints kept at evenly spaced epoch ends (LESS: one per epoch of 4); 0 =
                                     # every epoch
  c.selection.train_batch_size = 32  # warm-up / CROPI fine-tune batch
  c.selection.learning_rate = 5e-5   # warm-up / CROPI fine-tune peak learning rate (Adam)
  c.selection.schedule_warmup_fraction = 0.1  # linear lr warm-up share, then linear decay to 0
  c.selection.adam_b1 = 0.9          # Adam moments of the warm-up (and of LESS's Adam-aware features)
  c.selection.adam_b2 = 0.999
  c.selection.adam_eps = 1e-8
  c.selection.less_checkpoints = -1  # LESS: use the last this-many epoch checkpoints (-1: all)
  c.selection.less_feature = "adam"  # LESS pool feature: "adam" (the Adam update direction, as the paper) or "sgd"
                                     # (the plain gradient, the reference's SGD option)
  c.selection.learnalign_alignment = "class"  # LearnAlign: "class" (own class's weighted mean gradient) or "pool"
                                     # (the paper's pool-wide mean, degenerate for a classifier head; see learnalign.py)
  c.selection.cropi_rounds = 3       # CROPI curriculum rounds (each selects 1/rounds of the budget)
  c.selection.cropi_round_epochs = 1  # CROPI: fine-tune epochs on the selection so far between rounds
  c.selection.rrf_offset = 0.0       # CROPI: rank fusion score = sum_c 1 / (offset + rank_c), rank from 1
  c.selection.rrf_top_n = -1         # CROPI: only ranks <= N count in the fusion; -1 = the round's share, 0 = all
  c.selection.dots_reference_size = 512   # DOTS: pool examples the warmed model is evaluated on (256 before
                                          # 2026-12-02: a larger set, as the reference uses)
  c.selection.dots_holdout_fraction = 0.25  # DOTS: share of the reference set held out to measure the estimator
  c.selection.dots_alpha = 0.5       # DOTS: target chance of being right
  c.selection.dots_tau = 1e-3        # DOTS: sampling temperature of P ~ exp(-|p - alpha| / tau) (the reference's)
  c.selection.estimator_hidden = 64  # DOTS attention estimator: MLP hidden size and key/query size h
  c.selection.estimator_steps = 300  # DOTS estimator: full-batch Adam steps (leave-one-out loss)
  c.selection.estimator_learning_rate = 3e-3
  c.selection.calibration_steps = 200  # DOTS: Platt-scaling gradient steps on the leave-one-out predictions
  c.selection.calibration_learning_rate = 0.05
  c.selection.probe_steps = 300      # entropy: linear probe on validation embeddings, full-batch Adam steps
  c.selection.probe_learning_rate = 0.05
  c.selection.probe_l2 = 1e-3        # entropy probe weight decay (L2 on weights)
  c.selection.kmeans_clusters = 64   # cluster_balanced: k of k-means over the embeddings
  c.selection.kmeans_iters = 25      # cluster_balanced: Lloyd iterations
  # (cluster_balanced and kcenter also follow label_balanced: per-label quotas in the pool's label proportions)
  c.selection.probe_folds = 5        # ccs, label_clean: folds of the out-of-fold linear probe on pool embeddings
  c.selection.ccs_beta = 0.1         # ccs: share of the pool dropped as hardest (likely mislabelled) before binning
  c.selection.ccs_bins = 50          # ccs: difficulty strata sampled evenly (Zheng et al. use 50)
  c.selection.clean_filter_by = "prune_by_noise_rate"  # label_clean: cleanlab find_label_issues(filter_by=...)
  c.selection.facility_targets = 8192  # facility: rows of a label it must represent; a label with more is represented
                                     # by a seeded random sample of this many (memory ~ targets x label rows floats)

  # CLIMB-style mixture search (selector `climb`; the warm start of `rl_ppo_warm`): rlsel/selectors/climb.py. Uses c.kmeans,
  # c.proxy and c.rl.chunk / episode_steps / fast_compile to build the same environment as the RL selectors.
  c.climb = ml_collections.ConfigDict()
  c.climb.iterations = 8             # rounds: sample, score a share by the proxy, refit the surrogate, keep the top
  c.climb.samples = 128              # chunk allocations sampled per round
  c.climb.score_share = 0.25         # share of each round's samples scored by the real proxy (the surrogate's top ones)
  c.climb.concentration = 20.0       # Dirichlet concentration around a kept allocation (higher = closer to it)
  c.climb.dirichlet_floor = 0.1      # added to every cluster's Dirichlet parameter, so clusters left out can come back
  c.climb.explore_share = 0.25       # share of samples drawn uniformly over the simplex instead (exploration)
  c.climb.top_k = 8                  # distinct allocations (predicted best) kept as the next round's proposal
  c.climb.rescore_top = 4            # best really-scored allocations re-scored with fresh proxy keys for the answer
  c.climb.surrogate_hidden = 64      # the search's surrogate MLP width (rlsel/surrogate.py, on the env's mask features)
  c.climb.surrogate_steps = 200      # surrogate Adam steps per round, on every (allocation, score) pair so far
  c.climb.surrogate_batch = 64       # surrogate minibatch
  c.climb.surrogate_lr = 3e-3        # surrogate Adam learning rate
  c.climb.warm_iterations = 4        # rl_ppo_warm: rounds of the short climb run behind the warm start
  c.climb.bc_demos = 4               # rl_ppo_warm: best distinct allocations whose round-robin episodes are cloned
  c.climb.bc_steps = 200             # rl_ppo_warm: full-batch Adam steps of behaviour cloning
  c.climb.bc_lr = 3e-3               # rl_ppo_warm: behaviour-cloning Adam learning rate
  return c


def protocol_config() -> ml_collections.ConfigDict:
  """`base_config()` with the fine-tune protocol every selector comparison uses (issue 15, benchmarks/RESULTS.md).

  Shared by the main job (configs/glue.py), the benchmark grid (configs/benchmark.py) and the noisy pools
  (configs/noisy.py), so the main job's cells are the benchmark's seed-0 cells of `rt`. A subset trains at least
  `finetune.min_steps` = 200 steps (chosen on validation accuracy by `python -m rlsel.bench.steps_curve`, random 5% on
  rt and tweets, 3 paired seeds: validation flat from 200 to 400 steps), full data at most `finetune.max_steps` = 200
  (0.6 epoch of rt); 40 tokens and validation every 40 steps cut the main job's time (13 min 19 s on 2 quiet cores
  on 2026-12-06, 28.6 min on a machine 1.8x slower: benchmarks/RESULTS.md).
  The RL environment leaves out the rows confident learning flags as likely mislabelled (`rl.drop_label_issues`):
  chosen on validation, rl_ppo on rt, 5 paired seeds (2026-12-06, session 21), +1.29 points [+0.45, +2.13] against
  the environment without it (test +0.42 [-0.66, +1.51]); benchmarks/RESULTS.md, "Selector comparison".
  """
  c = base_config()
  c.features.max_length = 40
  c.finetune.min_steps = 200
  c.finetune.max_steps = 200
  c.finetune.eval_every = 40
  c.rl.drop_label_issues = True
  return c


def lock(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  config.lock()
  return config


def names_list(value) -> tuple:
  """A tuple of names from a config field given as a tuple or a comma-separated string (`--config.selectors=a,b`)."""
  items = [value] if isinstance(value, str) else list(value)
  return tuple(v.strip() for item in items for v in str(item).split(",") if v.strip())


def ints_list(value) -> tuple:
  """A tuple of ints from a field given as an int, a tuple or a comma-separated string (`--config.seeds=0,1`)."""
  if isinstance(value, int) and not isinstance(value, bool):
    return (value,)
  if isinstance(value, str):
    from rlsel.errors import UserError
    try:
      return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
      raise UserError(f"{value!r} is not a comma-separated list of integers, e.g. --config.seeds=0,1") from None
  return tuple(value)


def flat_items(d: dict, prefix: str = ""):
  """(dotted field, value) pairs of a nested dict (e.g. `config.to_dict()`): ("finetune.max_steps", 200), ..."""
  for k, v in d.items():
    if isinstance(v, dict):
      yield from flat_items(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}", v
