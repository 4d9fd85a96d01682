"""The RLVR experiment: per seed, build the policy (small decoder warmed up on the task, or SmolLM2), then train it
with each method in `rlvr.methods` from that same start and report greedy test accuracy and costs.

- "uniform" (alias "grpo"): GRPO on uniformly drawn prompts (without replacement within an epoch of the pool).
- "dots": GRPO on DOTS-selected prompts (attention difficulty estimator, p_hat near alpha), all rolled out fresh.
- "dots_replay": DOTS plus rollout replay (a share of each step's groups comes from a FIFO buffer).
- "learnalign": GRPO on the top N prompts by learnability-weighted gradient alignment (rlvr/learnalign.py).
- "cropi": rounds of off-policy gradient-influence selection, GRPO on the kept 10% between them (rlvr/cropi.py).

Rows, results.md and plots are written by `rlsel.rlvr.report`; a rerun in the same workdir skips finished cells.
"""

import json
import pathlib
import time

import jax
import numpy as np

from rlsel.errors import UserError, require
from rlsel.rlvr import arithmetic, decoder, dots, grpo, report
from rlsel.rlvr.replay import ReplayBuffer

METHODS = ("uniform", "grpo", "dots", "dots_replay", "learnalign", "cropi")


def load_problems(rlvr_cfg):
  """(train pool, validation, test) Problems for `rlvr.task`."""
  d = rlvr_cfg.data
  if rlvr_cfg.task == "arithmetic":
    return arithmetic.arithmetic_splits(d.seed, arithmetic.parse_levels(d.levels), d.n_train, d.n_validation,
                                        d.n_test)
  if rlvr_cfg.task == "jsonl":
    require(bool(d.jsonl_file), "task 'jsonl' needs --config.rlvr.data.jsonl_file=PATH to a {prompt, answer} JSONL")
    allp = arithmetic.load_jsonl(d.jsonl_file)
    perm = np.random.default_rng(d.seed).permutation(len(allp))
    k = int(round(d.holdout_fraction * len(allp)))
    require(k >= 1 and len(allp) - 2 * k >= 1, f"{d.jsonl_file} is too small to hold out validation and test; "
            "add problems or change rlvr.data.holdout_fraction")
    return allp.take(perm[2 * k:]), allp.take(perm[:k]), allp.take(perm[k:2 * k])
  if rlvr_cfg.task == "gsm8k":
    train, test = arithmetic.load_gsm8k(d.gsm8k_path)
    perm = np.random.default_rng(d.seed).permutation(len(train))
    k = min(d.n_validation, len(train) // 10)
    return train.take(perm[k:]), train.take(perm[:k]), test
  raise UserError(f"unknown rlvr.task {rlvr_cfg.task!r}; use arithmetic, jsonl or gsm8k")


def small_config(rlvr_cfg, vocab_size: int) -> decoder.DecoderConfig:
  s = rlvr_cfg.small
  return decoder.DecoderConfig(vocab_size=vocab_size, width=s.width, num_layers=s.num_layers, num_heads=s.num_heads,
                               num_kv_heads=s.num_kv_heads, head_dim=s.head_dim, mlp_dim=s.mlp_dim,
                               rope_theta=s.rope_theta, rms_eps=s.rms_eps, rope_interleaved=s.rope_interleaved,
                               init_std=s.init_std)


def build_policy(rlvr_cfg, key, train):
  """(Policy, start params, seconds spent warming up); for SmolLM2 the prompts get its chat template."""
  g = rlvr_cfg.grpo
  if rlvr_cfg.model == "smollm2":
    from rlsel.rlvr import smollm2
    module, params, tok = smollm2.load(rlvr_cfg.smollm2_path)
    return grpo.Policy(module, tok, rlvr_cfg.data.prompt_len, g.max_new_tokens, g.temperature, g.top_p), params, 0.0
  require(rlvr_cfg.model == "small", f"unknown rlvr.model {rlvr_cfg.model!r}; use small or smollm2")
  from rlsel.rlvr.tokenizer import CharTokenizer
  from rlsel.rlvr.warmup import make_warmup
  tok = CharTokenizer()
  module, params = decoder.init_params(small_config(rlvr_cfg, tok.vocab_size), key)
  t0 = time.perf_counter()
  if rlvr_cfg.warmup.steps > 0:
    warm = make_warmup(module, tok, train, rlvr_cfg.warmup, rlvr_cfg.data.prompt_len, g.max_new_tokens)
    params, _ = warm(jax.random.fold_in(key, 1), params)
    jax.block_until_ready(params)
  return grpo.Policy(module, tok, rlvr_cfg.data.prompt_len, g.max_new_tokens, g.temperature, g.top_p), params, \
      time.perf_counter() - t0


def chat_wrap(problems, tokenizer):
  """Puts each prompt into the instruct model's chat template, asking for the bare number."""
  wrap = getattr(tokenizer, "chat", None)
  if wrap is None:
    return problems
  prompts = [wrap(f"{p.rstrip('=')} = ? Reply with only the final number.") for p in problems.prompts]
  return arithmetic.Problems(prompts, problems.answers, problems.levels)


def embed_pool(policy, params, problems, batch_size: int):
  """Frozen prompt embeddings [n, W] (mean-pooled final hidden states), standardised over the pool."""
  f = jax.jit(lambda p, ids, m: decoder.prompt_embeddings(policy.module, p, ids, m))
  out = []
  for s in range(0, len(problems), batch_size):
    ids, m = policy.encode(problems.prompts[s:s + batch_size])
    n = ids.shape[0]
    pad = batch_size - n
    ids, m = np.concatenate([ids, np.repeat(ids[-1:], pad, 0)]), np.concatenate([m, np.repeat(m[-1:], pad, 0)])
    out.append(np.asarray(f(params, ids, m))[:n])
  return dots.standardise(np.concatenate(out))


def _step_prompts(rng, allowed, state, b):
  """b prompts drawn uniformly from `allowed` without replacement within an epoch; `state` = (order, pos)."""
  order, pos = state
  if order is None or pos + b > len(order):
    order, pos = rng.permutation(allowed), 0
  return order[pos:pos + b], (order, pos + b)


def estimator_check(policy, params, problems, hold_ids, p_hat_hold, ref_rates, group_size: int, key, step: int):
  """How well DOTS' p_hat predicts the success rate of prompts it was not fitted on, at the current policy.

  The held-out prompts get two independent groups of G rollouts; their mean is the measured rate. The two halves'
  correlation r (split_half_pearson) gives the reliability of the 2G-sample rate, 2r / (1 + r), whose square root
  (noise_ceiling_pearson) is the Pearson correlation even the true success probabilities would reach with it.
  The baseline mae_reference_mean predicts every prompt at the reference set's mean rate.
  """
  from rlsel.stats import pearson, spearman
  a = policy.rollout(params, problems, hold_ids, group_size, jax.random.fold_in(key, 0)).rewards.mean(axis=1)
  b = policy.rollout(params, problems, hold_ids, group_size, jax.random.fold_in(key, 1)).rewards.mean(axis=1)
  rate, p = (a + b) / 2, np.asarray(p_hat_hold, np.float64)
  half = pearson(a, b)
  ceiling = None if half is None or half <= 0 else float(np.sqrt(2 * half / (1 + half)))
  return {"step": int(step), "pearson": pearson(p, rate), "spearman": spearman(p, rate),
          "mae": float(np.mean(np.abs(p - rate))),
          "mae_reference_mean": float(np.mean(np.abs(float(np.mean(ref_rates)) - rate))),
          "split_half_pearson": half, "noise_ceiling_pearson": ceiling,
          "measured_mean": float(rate.mean()), "p_hat_mean": float(p.mean())}


def _mean_defined(values):
  v = [x for x in values if x is not None]
  return float(np.mean(v)) if v else None


def train_method(method: str, rlvr_cfg, policy, params0, train, test, key, optimizer=None, update=None,
                 validation=None):
  """Runs one method for `rlvr.grpo.steps` steps; returns (result row with an accuracy history, final params).

  The history's `seconds` are training seconds so far (rollouts, updates, selection work; evaluation excluded).
  Pass `optimizer`/`update` from a previous call to reuse the compiled update across methods; CROPI needs `validation`.
  """
  g, d = rlvr_cfg.grpo, rlvr_cfg.dots
  if update is None:
    optimizer = grpo.make_optimizer(g)
    update = grpo.make_update(policy.module, optimizer, g)
  state = grpo.init_state(params0, optimizer)
  eval_set = test.take(np.arange(min(g.eval_size, len(test))))
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel()[-1])
  b = g.prompts_per_step
  require(b <= len(train), f"rlvr.grpo.prompts_per_step={b} exceeds the pool ({len(train)}); lower it")
  history = [{"step": 0, "seconds": 0.0, "test_accuracy": policy.accuracy(params0, eval_set, g.eval_batch_size)}]
  gen_s, upd_s, est_s, sel_s, fresh_rollouts, replayed_groups, used = [], [], 0.0, 0.0, 0, 0, set()
  info = {}
  is_dots = method in ("dots", "dots_replay")
  buffer = ReplayBuffer(d.replay_capacity) if method == "dots_replay" else None
  allowed, draw = np.arange(len(train)), (None, 0)
  if is_dots:
    t0 = time.perf_counter()
    pool_emb = embed_pool(policy, params0, train, d.embed_batch_size)  # frozen: the starting policy's features
    ref_size = min(d.reference_size, len(train))
    ref_ids = rng.choice(len(train), size=ref_size, replace=False)
    fit, predict = dots.make_fit(d), dots.make_predict(d)
    est_params = dots.init_params(jax.random.fold_in(key, 7), pool_emb.shape[1], d.proj_hidden, d.proj_dim)
    est_s += time.perf_counter() - t0
    # measurement only: its own key and NumPy stream, so the method's trajectory is the same with or without it
    rest = np.setdiff1d(np.arange(len(train)), ref_ids)
    hold_rng = np.random.default_rng(np.asarray(jax.random.key_data(jax.random.fold_in(key, 19))).ravel().tolist())
    hold_ids = hold_rng.choice(rest, size=min(d.holdout_size, len(rest)), replace=False)
    info = {"estimator": [], "reference_prompts_used": 0}
    ref_used = set()
  elif method == "learnalign":
    from rlsel.rlvr import learnalign
    t0 = time.perf_counter()
    allowed, info = learnalign.select(policy, update, optimizer, params0, train, rng, jax.random.fold_in(key, 11),
                                      rlvr_cfg)
    sel_s += time.perf_counter() - t0
  elif method == "cropi":
    from rlsel.rlvr import cropi
    require(validation is not None, "cropi needs the validation prompts")
    t0 = time.perf_counter()
    offline = cropi.collect(policy, params0, train, validation, rng, jax.random.fold_in(key, 13), rlvr_cfg)
    projector = cropi.make_projector(jax.random.fold_in(key, 17), params0, rlvr_cfg)
    starts = cropi.round_starts(g.steps, rlvr_cfg.cropi.rounds)
    sel_s += time.perf_counter() - t0
    info = {"offline_rollout_seconds": sel_s, "rounds": len(starts), "candidates": len(offline.candidates),
            "candidates_all_equal_rewards": int(cropi.all_equal_rewards(offline.train_groups).sum()),
            "round_seconds": [], "kept_all_equal_rewards": []}
  clock = sel_s + est_s
  for step in range(g.steps):
    key, k_roll, k_sel, k_ref = jax.random.split(key, 4)
    if method == "cropi" and step in starts:
      allowed, secs, all_equal = cropi.select_round(policy.module, state.params, offline, projector, rlvr_cfg)
      info["kept_all_equal_rewards"].append(all_equal)
      draw = (None, 0)
      sel_s += secs
      clock += secs
      info["round_seconds"].append(secs)
    if not is_dots:
      ids, draw = _step_prompts(rng, allowed, draw, b)
      state, _, m = grpo.grpo_step(policy, update, state, params0, train, ids, k_roll, g)
      gen_s.append(m["generation_seconds"])
      upd_s.append(m["update_seconds"])
      clock += m["generation_seconds"] + m["update_seconds"]
    else:
      if step % d.reestimate_every == 0:
        t0 = time.perf_counter()
        if step > 0:  # fresh reference prompts at every re-estimate, as the reference implementation
          ref_ids = rng.choice(len(train), size=ref_size, replace=False)
        ref_used.update(ref_ids.tolist())
        info["reference_prompts_used"] = len(ref_used)
        ref = policy.rollout(state.params, train, ref_ids, g.group_size, k_ref)
        fresh_rollouts += ref.rewards.size
        est = fit(est_params, pool_emb[ref_ids], ref.rewards.mean(axis=1))
        est_params = est.params
        p_hat = predict(est, pool_emb)
        jax.block_until_ready(p_hat)
        est_s += time.perf_counter() - t0
        clock += time.perf_counter() - t0
        held = hold_ids[~np.isin(hold_ids, ref_ids)]  # prompts outside this estimate's (resampled) reference set
        if len(held) > 1:
          info["estimator"].append(estimator_check(policy, state.params, train, held, np.asarray(p_hat)[held],
                                                   ref.rewards.mean(axis=1), g.group_size,
                                                   jax.random.fold_in(k_ref, 1), step))
      n_replay = 0 if buffer is None else b - max(1, int(round(d.fresh_fraction * b)))
      if buffer is not None and len(buffer) < n_replay:
        n_replay = 0  # fill the step with fresh prompts until the buffer can supply its share
      replayed = buffer.sample(rng, n_replay) if buffer is not None else None
      replay_ids = set() if replayed is None else set(replayed.prompt_ids.tolist())
      replayed_groups += len(replay_ids)
      # the replayed prompts are not drawn fresh in the same step: push their p_hat far from alpha
      away = np.where(np.isin(np.arange(len(train)), list(replay_ids)), np.inf, 0.0)
      ids = np.asarray(dots.select(k_sel, np.asarray(p_hat) + away, b - n_replay, d.alpha, d.tau))
      t0 = time.perf_counter()
      fresh = policy.rollout(state.params, train, ids, g.group_size, k_roll)
      gen_s.append(time.perf_counter() - t0)
      groups = fresh if replayed is None else grpo.concat_groups([fresh, replayed])
      state, m, upd = grpo.train_step(policy, update, state, params0, groups, g)
      upd_s.append(upd)
      clock += gen_s[-1] + upd
      if buffer is not None:
        buffer.add(fresh, d.informative_only)
      m["reward"] = float(fresh.rewards.mean())
    fresh_rollouts += g.group_size * (len(ids))
    used.update(int(i) for i in ids)
    if (step + 1) % g.eval_every == 0 or step + 1 == g.steps:
      history.append({"step": step + 1, "seconds": clock,
                      "test_accuracy": policy.accuracy(state.params, eval_set, g.eval_batch_size),
                      "train_reward": float(m["reward"])})
  checks = info.get("estimator", []) if is_dots else []
  estimator = {f"estimator_{k}": _mean_defined([c[k] for c in checks])
               for k in ("pearson", "spearman", "mae", "mae_reference_mean", "split_half_pearson",
                        "noise_ceiling_pearson")} if checks else {}
  return {"selector": method, "test_accuracy": history[-1]["test_accuracy"], "test_macro_f1": None, **estimator,
          "initial_test_accuracy": history[0]["test_accuracy"], "steps": g.steps, "n_selected": len(used),
          "fresh_rollouts": int(fresh_rollouts), "replayed_groups": replayed_groups,
          # the first step includes compilation: report the median
          "generation_seconds_per_step": float(np.median(gen_s)), "update_seconds_per_step": float(np.median(upd_s)),
          "estimation_seconds": est_s, "select_seconds": sel_s + est_s,
          "finetune_seconds": float(np.sum(gen_s) + np.sum(upd_s)), "selection_info": info,
          "history": history}, state.params


def _load_rows(path: pathlib.Path) -> list:
  """Rows of an earlier run in the same workdir (resume); a foreign file is a user error."""
  if not path.exists():
    return []
  try:
    rows = json.loads(path.read_text())
  except json.JSONDecodeError:
    rows = None
  if not isinstance(rows, list) or not all(isinstance(x, dict) and {"selector", "task", "seed", "history"} <= set(x)
                                           for x in rows):
    raise UserError(f"{path} is not an rlvr results file; move it away or use another --workdir")
  return rows


def run(config, workdir) -> list:
  """All (method, seed) rows; results.json and results.md are rewritten after every finished cell, the plots at the
  end. Cells already
  in `workdir/rlvr.results_file` are skipped (resume); a seed whose cells are all done is not even warmed up."""
  rlvr_cfg = config.rlvr
  from rlsel.configlib import names_list
  methods = names_list(rlvr_cfg.methods)  # a tuple, or "a,b" from the command line
  for m in methods:
    require(m in METHODS, f"unknown rlvr method {m!r}; choose from {', '.join(METHODS)}")
  out = pathlib.Path(workdir)
  rows = _load_rows(out / rlvr_cfg.results_file)
  done = {report.cell_key(x) for x in rows}
  train, validation, test = load_problems(rlvr_cfg)
  for seed in config.seeds:
    todo = [m for m in methods if (m, rlvr_cfg.task, int(seed)) not in done]
    for m in methods:
      if m not in todo:
        print(f"[rlvr] {m} seed={seed}: done earlier, skipped", flush=True)
    if not todo:
      continue
    key = jax.random.key(seed)
    policy, params0, warm_s = build_policy(rlvr_cfg, key, train)
    tr, va, te = (chat_wrap(x, policy.tokenizer) for x in (train, validation, test))
    policy.check_prompt_len(tr)
    policy.check_prompt_len(te)
    if "cropi" in todo:
      policy.check_prompt_len(va)
    optimizer = grpo.make_optimizer(rlvr_cfg.grpo)
    update = grpo.make_update(policy.module, optimizer, rlvr_cfg.grpo)  # compiled once, shared by the methods
    for method in todo:
      t0 = time.perf_counter()
      row, _ = train_method(method, rlvr_cfg, policy, params0, tr, te, jax.random.fold_in(key, 2), optimizer, update,
                            va)
      rows.append({"task": rlvr_cfg.task, "model": rlvr_cfg.model, "seed": int(seed), "budget": None,
                   "warmup_seconds": warm_s,
                   "seconds": time.perf_counter() - t0, **row})
      # plots once at the end (matplotlib is slow)
      rows = report.write(out, rows, rlvr_cfg.results_file, with_plots=False)
      print(f"[rlvr] {method} seed={seed} test_accuracy {row['initial_test_accuracy']:.3f} -> "
            f"{row['test_accuracy']:.3f} select {row['select_seconds']:.1f}s train {row['finetune_seconds']:.1f}s "
            f"gen {row['generation_seconds_per_step']:.3f}s/step update {row['update_seconds_per_step']:.3f}s/step",
            flush=True)
  return report.write(out, rows, rlvr_cfg.results_file, with_plots=bool(rlvr_cfg.plots))
