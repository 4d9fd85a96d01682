"""Tokenisation with the MiniLM WordPiece tokenizer, and frozen-encoder pool features cached in the workdir.

The pool features are the mean-pooled last hidden states of the pretrained all-MiniLM-L6-v2 encoder (the way that
model was trained to embed sentences). They cost minutes on CPU for a 10k pool, so they are cached as `.npy` under
`<workdir>/features/`, keyed by task, model, max length and a fingerprint of the example ids.
"""

import functools
import hashlib
import os
import pathlib
import time

import numpy as np

from rlsel import assets
from rlsel.errors import UserError
from rlsel.io import atomic_save_npy

ENCODER_NAME = "all-MiniLM-L6-v2"
# Fields of the `features` config section that change only the speed, never a number: left out of fingerprints and
# cell identities, so work saved before such a field existed (or under another value) stays valid.
SPEED_ONLY_FIELDS = ("length_multiple",)


def identity(features_config):
  """The `features` section without its speed-only fields, for fingerprints of saved work."""
  import json
  import ml_collections
  out = ml_collections.ConfigDict()
  # field by field in the section's own order (keys() and to_dict() sort; to_json, which fingerprints read, does not),
  # so the fingerprint equals the one made before the speed-only fields existed
  for k, v in json.loads(features_config.to_json()).items():
    if k not in SPEED_ONLY_FIELDS:
      out[k] = v
  return out


@functools.lru_cache(maxsize=4)
def tokenizer(max_length: int):
  """The MiniLM WordPiece tokenizer (uncased, 30,522 tokens), truncating and padding to `max_length`."""
  from tokenizers import Tokenizer
  if max_length < 4:
    raise UserError(f"features.max_length={max_length} is too short; use at least 4 "
                    "(40 fits 88% of rt and 75% of tweets whole)")
  tok = Tokenizer.from_file(str(assets.minilm_dir() / "tokenizer.json"))
  tok.enable_truncation(max_length=max_length)
  tok.enable_padding(length=max_length, pad_id=0, pad_token="[PAD]")
  return tok


def tokenize(texts, pairs, max_length: int) -> dict:
  """Token arrays for a list of texts (and optional second texts): int32 [n, max_length] each."""
  tok = tokenizer(max_length)
  if pairs is not None and any(pairs):
    enc = tok.encode_batch(list(zip(texts, pairs)))
  else:
    enc = tok.encode_batch(list(texts))
  n = len(enc)
  out = {
      "input_ids": np.array([e.ids for e in enc], np.int32).reshape(n, max_length),
      "attention_mask": np.array([e.attention_mask for e in enc], np.int32).reshape(n, max_length),
      "token_type_ids": np.array([e.type_ids for e in enc], np.int32).reshape(n, max_length),
  }
  return out


def cache_path(workdir: str, task: str, split: str, max_length: int, ids: np.ndarray) -> pathlib.Path:
  """Where a split's features live: keyed by task, encoder, max length and the exact ids."""
  fp = hashlib.sha1(np.ascontiguousarray(ids, np.int64).tobytes()).hexdigest()[:12]
  return pathlib.Path(workdir) / "features" / f"{task}-{split}-{ENCODER_NAME}-len{max_length}-{fp}.npy"


def length_sorted_batches(attention_mask: np.ndarray, batch_size: int, multiple: int):
  """Yields (positions int [batch_size], real rows, columns): fixed-size batches of rows sorted by token extent, cut
  to the batch's longest extent rounded up to `multiple` (at most the full width), so short texts do not pay for
  padding columns. Padded batch positions repeat the batch's first row (jitted shapes stay fixed: one compile per
  width). `multiple=0` keeps the full width and the original order. The extent is the last attended column + 1, so
  left-padded (decoder) rows keep their full width and nothing attended is ever cut."""
  if batch_size < 1 or multiple < 0:
    raise UserError(f"batch_size={batch_size} must be >= 1 and length multiple={multiple} >= 0")
  mask = np.asarray(attention_mask)
  n, width = mask.shape
  if multiple == 0:
    order, extent = np.arange(n), np.full(n, width)
  else:
    attended = mask != 0
    extent = np.where(attended.any(1), width - np.argmax(attended[:, ::-1], axis=1), 1)
    order = np.argsort(extent, kind="stable")
  for start in range(0, n, batch_size):
    rows = order[start:start + batch_size]
    cols = width if multiple == 0 else min(width, int(-(-extent[rows].max() // multiple) * multiple))
    pos = np.concatenate([rows, np.full(batch_size - len(rows), rows[0])])
    yield pos, len(rows), cols


def embed_tokens(tokens: dict, batch_size: int, desc: str = "embedding", encoder=None,
                 length_multiple: int = 0) -> np.ndarray:
  """Mean-pooled encoder features, float32 [n, hidden], in jitted fixed-size batches with a progress bar. `encoder`
  is (Encoder module, params); default the frozen pretrained MiniLM (the pool features). A fine-tuned target's
  encoder gives task-adapted features. `length_multiple > 0` runs length-sorted batches cut to their longest text
  (`length_sorted_batches`): the same features up to float rounding, 0.7-0.9x the time on rt."""
  import jax
  import jax.numpy as jnp
  from rlsel.target import model as target_model
  from rlsel import progress

  module, params = target_model.pretrained_encoder() if encoder is None else encoder

  @jax.jit
  def forward(params, ids, mask, types):
    hidden = module.apply({"params": params}, ids, mask, types, deterministic=True)
    m = mask[..., None].astype(hidden.dtype)
    return (hidden * m).sum(1) / jnp.maximum(m.sum(1), 1.0)

  n = tokens["input_ids"].shape[0]
  out = np.zeros((n, module.config.hidden_size), np.float32)
  bar = progress.bar(n, desc)
  for pos, real, cols in length_sorted_batches(tokens["attention_mask"], batch_size, length_multiple):
    batch = [tokens[k][pos, :cols] for k in ("input_ids", "attention_mask", "token_type_ids")]
    out[pos[:real]] = np.asarray(forward(params, *batch))[:real]
    bar.update(real)
  bar.close()
  return out


def cached_embeddings(workdir: str, task: str, split: str, ids: np.ndarray, tokens: dict, max_length: int,
                      batch_size: int, length_multiple: int = 0) -> np.ndarray:
  """Loads the split's features from the workdir cache, computing and saving them on a miss (`embed_tokens`; the
  length multiple changes only the speed, not the cache key)."""
  path = cache_path(workdir, task, split, max_length, ids)
  if path.exists():
    try:
      emb = np.load(path)
      if emb.shape == (ids.shape[0], emb.shape[1]) and emb.dtype == np.float32:
        return emb
    except (OSError, ValueError):
      pass
    print(f"[features] ignoring unreadable cache {path}; recomputing", flush=True)
  t0 = time.time()
  emb = embed_tokens(tokens, batch_size, desc=f"embedding {task}/{split}", length_multiple=length_multiple)
  os.makedirs(path.parent, exist_ok=True)
  atomic_save_npy(path, emb)
  print(f"[features] {task}/{split}: {emb.shape[0]} examples embedded in {time.time() - t0:.1f}s -> {path}", flush=True)
  return emb
