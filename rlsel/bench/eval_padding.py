"""Evaluation with and without the padding columns: `features.length_multiple` against the full width, same run.

  python -m rlsel.bench.eval_padding [--config=configs/glue.py] [--config.task=rt] [--rows=2048] [--repeats=3]

Times, alternately so that a busy machine slows both alike, (a) the frozen-encoder pool embedding of the first
`--rows` pool rows and (b) the target's class probabilities on the validation split, once at the full width
(`length_multiple=0`) and once length-sorted at the config's multiple; each after one untimed compile pass. Prints the
median seconds of each, their ratio (cut / full) and the largest absolute difference of the outputs. The last line is
`eval_padding_ratio=<probabilities cut / full>`.
"""

import sys
import time

from absl import app, flags
from ml_collections import config_flags
import numpy as np

_CONFIG = _ROWS = _REPEATS = None


def define_flags() -> None:
  """Registers the flags (only when run as a script, so importing the module defines none)."""
  global _CONFIG, _ROWS, _REPEATS
  _CONFIG = config_flags.DEFINE_config_file("config", "configs/glue.py", "Main-command config (task, features, "
                                            "target).", lock_config=True)
  _ROWS = flags.DEFINE_integer("rows", 2048, "Pool rows to embed.")
  _REPEATS = flags.DEFINE_integer("repeats", 3, "Timed passes of each variant (alternating).")


def _timed(fn, repeats: int, multiples) -> dict:
  """{multiple: (median seconds, last output)} over `repeats` alternating passes after one compile pass each."""
  out = {m: fn(m) for m in multiples}  # compile every width first
  secs = {m: [] for m in multiples}
  for _ in range(repeats):
    for m in multiples:
      t0 = time.perf_counter()
      out[m] = fn(m)
      secs[m].append(time.perf_counter() - t0)
  return {m: (float(np.median(secs[m])), out[m]) for m in multiples}


def run(config, rows: int, repeats: int) -> dict:
  import jax
  from rlsel import features
  from rlsel.data import load_task
  from rlsel.errors import require
  from rlsel.selectors.base import Split
  from rlsel.target import finetune as ft
  from rlsel.target import model as target_model

  require(rows >= 1 and repeats >= 1, "--rows and --repeats must be at least 1")
  multiple = int(config.features.length_multiple)
  require(multiple > 0, "set --config.features.length_multiple > 0: it is what this benchmark compares with 0")
  task = load_task(config)

  def tokens(split, n=None):
    ds = task.dataset[split]
    ds = ds.select(range(min(n, len(ds)))) if n else ds
    return features.tokenize(ds["text"], ds["text_pair"] if task.is_pair_task else None, config.features.max_length)

  pool_toks = tokens("train", rows)
  emb = _timed(lambda m: features.embed_tokens(pool_toks, int(config.features.batch_size), "embedding",
                                               length_multiple=m), repeats, (0, multiple))
  val = tokens("validation")
  n_val = val["input_ids"].shape[0]
  split = Split(np.arange(n_val), np.zeros(n_val, np.int32), val["input_ids"], val["attention_mask"],
                val["token_type_ids"])
  module, params = target_model.build(config, len(task.label_names), key=jax.random.key(0))
  probs = _timed(lambda m: ft.predict_proba(module, params, split, int(config.finetune.eval_batch_size),
                                            length_multiple=m), repeats, (0, multiple))
  lengths = val["attention_mask"].sum(1)

  def row(name, n, timed):
    full, cut = timed[0], timed[multiple]
    return {"what": name, "rows": n, "full_seconds": full[0], "cut_seconds": cut[0], "ratio": cut[0] / full[0],
            "max_abs_difference": float(np.abs(cut[1] - full[1]).max())}

  return {"task": task.name, "max_length": int(config.features.max_length), "multiple": multiple,
          "mean_tokens_validation": float(lengths.mean()),
          "rows": [row("pool embedding", pool_toks["input_ids"].shape[0], emb),
                   row("target probabilities (validation)", n_val, probs)]}


def main(argv) -> None:
  del argv
  from rlsel.errors import UserError, fail
  try:
    out = run(_CONFIG.value, _ROWS.value, _REPEATS.value)
  except UserError as e:
    fail("eval_padding", str(e))
  print(f"\n{out['task']}: max length {out['max_length']}, validation texts average "
        f"{out['mean_tokens_validation']:.1f} tokens; length multiple {out['multiple']} against the full width\n")
  print("| what | rows | full width s | length-sorted s | ratio | max abs difference |")
  print("|---|---|---|---|---|---|")
  for r in out["rows"]:
    print(f"| {r['what']} | {r['rows']:,} | {r['full_seconds']:.2f} | {r['cut_seconds']:.2f} | {r['ratio']:.2f}x | "
          f"{r['max_abs_difference']:.1e} |")
  print(f"eval_padding_ratio={out['rows'][-1]['ratio']:.3f}")
  sys.stdout.flush()


if __name__ == "__main__":
  define_flags()
  app.run(main)
