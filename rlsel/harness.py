"""One harness for every selector: load the task, build the pool, then per (seed, selector) cell
select -> save ids -> fine-tune the target -> evaluate on test -> append a row to results.json.

Cells already in `<workdir>/results.json` are skipped, and a selection saved before a crash is reused, so running
the same command again resumes.
"""

import json
import os
import pathlib
import shutil
import time

import jax
import numpy as np

from rlsel import features, results
from rlsel.checkpoint import Checkpointer, fingerprint
from rlsel.configlib import ints_list, names_list
from rlsel.data import load_task, noise
from rlsel.io import atomic_write_json
from rlsel.selectors import base as selbase


def split_from(task, split: str, config, workdir):
  """One split of a task as a selector's `Split`: the target's tokens now (a decoder target's own tokenizer), frozen
  MiniLM embeddings lazily from the workdir cache (from MiniLM's tokens, whatever the target)."""
  from rlsel.target import model as target_model
  ds = task.dataset[split]
  texts, pairs = ds["text"], (ds["text_pair"] if task.is_pair_task else None)
  toks = target_model.tokenize(config, texts, pairs)
  ids = np.asarray(ds["id"], np.int64)
  labels = np.asarray(ds["label"], np.int32)
  feature_toks = ((lambda: toks) if target_model.shares_feature_tokens(config)
                  else (lambda: features.tokenize(texts, pairs, config.features.max_length)))
  embed = lambda: features.cached_embeddings(workdir, task.cache_name, split, ids, feature_toks(),
                                             config.features.max_length, config.features.batch_size,
                                             config.features.length_multiple)
  return selbase.Split(ids, labels, toks["input_ids"], toks["attention_mask"], toks["token_type_ids"], embed)


def build_pool(config, task, workdir):
  """(Pool over train + validation, test Split) with tokens; embeddings load lazily from the workdir cache."""
  pool = selbase.Pool(task.name, task.label_names, split_from(task, "train", config, workdir),
                      split_from(task, "validation", config, workdir))
  return pool, split_from(task, "test", config, workdir)


def load_task_for_run(config, workdir):
  """`config.task` as every cell of a run sees it: loaded, then its pool's labels noised when `data.label_noise` > 0
  (instance noise reads the frozen embeddings from the workdir cache the pool uses)."""
  task = load_task(config)
  return noise.apply(task, config, workdir,
                     embeddings=lambda split: split_from(task, split, config, workdir).embeddings)


def select_ids(config, pool, selector_name: str, seed: int, fraction: float,
               dirs: selbase.RunDirs = selbase.RunDirs()) -> tuple:
  """One selection exactly as a cell of the command makes it (the key `fold_in(key(seed), 0)`): (ids checked
  against the pool and budget, JSON-safe info, seconds). The command and the Python API share it."""
  root = jax.random.key(seed)
  selector = selbase.make(selector_name, config)
  budget = selbase.budget_size(fraction, pool.size) if selector.uses_budget else pool.size
  t0 = time.time()
  ids, info = selector.select(jax.random.fold_in(root, 0), pool, budget, dirs)
  seconds = time.time() - t0
  return selbase.check_selection(ids, pool, budget, selector_name), _json_safe(info), seconds


def cell_name(selector: str, task: str, seed: int) -> str:
  return f"{selector}-{task}-{seed}"


def _json_safe(obj):
  try:
    json.dumps(obj)
    return obj
  except TypeError:
    return {k: v for k, v in obj.items() if isinstance(v, (int, float, str, bool, type(None)))} if isinstance(obj, dict) else None


def dataset_card(task, subset, selector: str, budget: float, seed: int, pool_size: int, config_id: str = None,
                 command: str = None) -> str:
  """What an exported subset is, in Markdown: selector, budget, seed, pool size, label counts, config id and the
  command that made it. It goes into the saved dataset's `info.description` and a README.md beside it."""
  counts = np.bincount(np.asarray(subset["label"], np.int64), minlength=task.num_classes)
  lines = [f"# rlsel selection: {selector} on {task.name}, seed {seed}", "",
           f"{len(subset)} of {pool_size} pool examples ({len(subset) / max(pool_size, 1):.2%}; budget {budget:g}), "
           f"chosen by the rlsel selector `{selector}` with run seed {seed}.", "",
           "| label | examples |", "|---|---|"]
  lines += [f"| {n} | {int(c)} |" for n, c in zip(task.label_names, counts)]
  lines += ["", f"- config id: `{config_id or 'n/a'}` (the settings are in the workdir's `configs/<id>.json`)",
            f"- command: `{command or 'n/a'}`",
            "- columns: " + ", ".join(f"`{c}`" for c in subset.column_names) + " (`id`: the example's id in the task; "
            "`label`: a ClassLabel with the label names; `original_label`, on a noised pool: the label before the "
            "noise)", ""]
  return "\n".join(lines)


def save_selection(workdir, task, pool, name: str, ids: np.ndarray, card: dict = None) -> None:
  """`selections/<name>.json` (sorted ids) and `selections/<name>/` (the subset as a Hugging Face dataset, with
  `dataset_card(task, subset, **card)` as its `info.description` and as a README.md in the folder)."""
  sel_dir = pathlib.Path(workdir) / "selections"
  sel_dir.mkdir(parents=True, exist_ok=True)
  import datasets
  datasets.disable_progress_bars()
  target = sel_dir / name
  tmp = sel_dir / f".{name}.tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  subset = task.dataset["train"].select(pool.train.positions_of(ids).tolist())
  text = dataset_card(task, subset, pool_size=pool.size, **card) if card else ""
  subset.info.description = text
  subset.save_to_disk(str(tmp))
  (tmp / "README.md").write_text(text)
  shutil.rmtree(target, ignore_errors=True)
  os.replace(tmp, target)
  atomic_write_json(sel_dir / f"{name}.json", [int(i) for i in np.sort(ids)])


def command_line() -> str:
  """The command that is running, for dataset cards (`python -m rlsel.main ...` when run as the command)."""
  import sys
  argv = list(sys.argv)
  if argv and argv[0].endswith(os.path.join("rlsel", "main.py")):
    argv = ["python", "-m", "rlsel.main"] + argv[1:]
  return " ".join(argv)


def selection_name(selector: str, task: str, seed: int, fraction: float, main_budget: float) -> str:
  """`<selector>-<task>-<seed>` at the config's budget (and for `full`); budget-sweep cells add `-b<fraction>`."""
  base_name = cell_name(selector, task, seed)
  return base_name if fraction in (main_budget, 1.0) else f"{base_name}-b{fraction:g}"


def run_cell(config, workdir, task, pool, test, selector_name: str, seed: int, fraction: float,
             embed_seconds: float, mesh=None, config_id: str = None) -> dict:
  from rlsel.target import finetune as ft
  from rlsel.target import model as target_model

  name = selection_name(selector_name, task.name, seed, fraction, config.budget)
  progress = pathlib.Path(workdir) / "progress" / f"{cell_name(selector_name, task.name, seed)}-b{fraction:g}.json"
  root = jax.random.key(seed)
  selector = selbase.make(selector_name, config)
  budget = selbase.budget_size(fraction, pool.size) if selector.uses_budget else pool.size
  if progress.exists():  # selected before an interruption: reuse it
    saved = json.loads(progress.read_text())
    ids, select_seconds, info = np.asarray(saved["ids"], np.int64), saved["select_seconds"], saved.get("info")
    print(f"[{name}] reusing the saved selection of {ids.size} examples", flush=True)
  else:
    print(f"[{name}] selecting {budget} of {pool.size} examples", flush=True)
    agent_ckpt = pathlib.Path(workdir) / "checkpoints" / f"{progress.stem}-agent"
    # Selectors that train (rl_*) write TensorBoard curves and checkpoint their train state in these folders.
    dirs = selbase.RunDirs(logdir=str(pathlib.Path(workdir) / "tensorboard" / name), checkpoint_dir=str(agent_ckpt))
    ids, info, select_seconds = select_ids(config, pool, selector_name, seed, fraction, dirs)
    save_selection(workdir, task, pool, name, ids,
                   card=dict(selector=selector_name, budget=fraction if selector.uses_budget else 1.0, seed=seed,
                             config_id=config_id, command=command_line()))
    atomic_write_json(progress, {"ids": ids.tolist(), "select_seconds": select_seconds, "info": info,
                                 "config_id": config_id, "selector": selector_name})
    shutil.rmtree(agent_ckpt, ignore_errors=True)  # the saved selection supersedes the agent's checkpoint
  row = {  # what every row says, fine-tuned or not
      "selector": selector_name, "task": task.name, "seed": int(seed), "budget": float(fraction),
      "n_selected": int(ids.size), "pool_size": int(pool.size), "select_seconds": float(select_seconds),
      "embed_seconds": float(embed_seconds) if selector.needs_embeddings else 0.0, "target": config.target.kind,
      **noise.noise_rates(task, ids),
  }
  if info:
    row["info"] = info
  if not config.finetune.enabled:  # select only: the selection's own diagnostics, no test metrics
    counts = np.bincount(pool.train.labels[pool.train.positions_of(ids)], minlength=pool.num_classes)
    row.update({"finetuned": False, "test_accuracy": None, "test_macro_f1": None, "val_accuracy": None,
                "finetune_seconds": 0.0, "label_counts": {str(n): int(c) for n, c in zip(task.label_names, counts)},
                "_checkpoint": None})
    print(f"[{name}] selected {ids.size} examples in {select_seconds:.1f}s (finetune.enabled=False: no fine-tune)",
          flush=True)
    return row
  subset = pool.train.take(pool.train.positions_of(ids))
  module, params = target_model.build(config, pool.num_classes, key=jax.random.fold_in(root, 1))
  ckpt = Checkpointer(pathlib.Path(workdir) / "checkpoints" / f"{progress.stem}-finetune",
                      fingerprint(config.target, config.finetune, features.identity(config.features), name, ids))
  result = ft.finetune(jax.random.fold_in(root, 2), config, module, params, subset, pool.validation,
                       log_prefix=f"{name} finetune", checkpointer=ckpt, mesh=mesh)
  t_test = time.time()
  probs = ft.predict_proba(module, result.params, test, config.finetune.eval_batch_size, mesh=mesh,
                           length_multiple=config.features.length_multiple)
  m = ft.metrics(test.labels, probs, pool.num_classes)
  row.update({
      "test_accuracy": m["accuracy"], "test_macro_f1": m["macro_f1"], "val_accuracy": result.val_accuracy,
      "finetune_seconds": float(result.seconds), "finetune_steps": result.steps,
      "validation_seconds": float(result.validation_seconds), "test_seconds": time.time() - t_test,
      "planned_steps": result.planned_steps, "best_step": result.best_step, "tokens": int(result.tokens),
      "flops": float(result.flops),
  })
  row["_checkpoint"] = ckpt  # removed by run() once the row is safely in results.json
  print(f"[{name}] test accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} "
        f"(select {select_seconds:.1f}s, fine-tune {result.seconds:.1f}s)", flush=True)
  return row


def plan(config) -> list:
  """Every cell of the config as (task, seed, selector, budget fraction), task-major, without repeats.

  The main grid is tasks x seeds x selectors at `config.budget`; the budget sweep adds `sweep.selectors` at each of
  `sweep.budgets`. `full` ignores the budget, so its cells carry budget 1.0 and are shared by every budget.
  """
  tasks = names_list(config.tasks) or (config.task,)
  seeds, names = ints_list(config.seeds), names_list(config.selectors)
  sweep_budgets = tuple(float(b) for b in config.sweep.budgets)
  cells = []
  for t in tasks:
    cells += [(t, s, n, config.budget) for s in seeds for n in names]
    cells += [(t, s, n, b) for b in sweep_budgets for s in seeds for n in names_list(config.sweep.selectors)]
  out, seen = [], set()
  for t, s, n, b in cells:
    key = (t, int(s), n, 1.0 if n == "full" else float(b))
    if key not in seen:
      seen.add(key)
      out.append(key)
  return out


def run(config, workdir) -> list:
  """Runs every cell of `plan(config)` not yet in `workdir/results.json`; returns all rows."""
  from rlsel import distributed
  rows = results.load_rows(workdir)
  done = {results.cell_key(r) for r in rows}
  cells = plan(config)
  cids = results.check_same_config(workdir, rows, config, selectors=[c[2] for c in cells])
  todo = [c for c in cells if (c[2], c[0], c[1], c[3]) not in done]
  if not todo:
    print(f"all {len(cells)} cells already in {workdir}/results.json; nothing to do", flush=True)
    return rows
  print(f"{len(todo)} of {len(cells)} cell(s) to run", flush=True)
  mesh = None
  if jax.device_count() > 1:  # data-parallel fine-tuning (and RL episodes, see rlsel/selectors/rl.py) over devices
    from rlsel import sharding
    mesh = sharding.make_mesh(config)
    print(f"mesh: {dict(mesh.shape)} over {jax.device_count()} {jax.devices()[0].platform} devices", flush=True)
  for task_name in dict.fromkeys(c[0] for c in todo):
    task_config = config.copy_and_resolve_references()
    with task_config.unlocked():
      task_config.task = task_name
    task = load_task_for_run(task_config, workdir)
    pool, test = build_pool(task_config, task, workdir)
    cells_here = [c for c in todo if c[0] == task_name]
    print(f"task {task.name}: pool {pool.size}, validation {len(pool.validation)}, test {len(test)}, "
          f"labels {list(task.label_names)}; {len(cells_here)} cell(s)", flush=True)
    embed_seconds = 0.0
    if any(selbase.make(n, config).needs_embeddings for _, _, n, _ in cells_here):
      t0 = time.time()
      pool.train.embeddings, pool.validation.embeddings  # noqa: B018 (computes or loads the cache)
      embed_seconds = time.time() - t0
    for _, seed, name, fraction in cells_here:
      row = run_cell(task_config, workdir, task, pool, test, name, seed, fraction, embed_seconds, mesh, cids[name])
      ckpt = row.pop("_checkpoint")
      row["config_id"] = cids[name]
      rows.append(row)
      if distributed.is_main_process():
        results.write(workdir, rows)
      if ckpt is not None:
        ckpt.remove()
      print(f"[{selection_name(name, task.name, seed, fraction, config.budget)}] row saved to results.json", flush=True)
    if distributed.is_main_process():
      from rlsel import plots
      plots.selection_maps(workdir, task, pool, [r for r in rows if r["task"] == task.name])
  if distributed.is_main_process():
    from rlsel import plots
    plots.accuracy_vs_budget(workdir, results.evaluated(rows))
    plots.paired_forest(workdir, results.paired(rows))
    plots.learning_curves(workdir, rows)
  return rows
