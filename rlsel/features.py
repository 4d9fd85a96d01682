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


@functools.lru_cache(maxsize=4)
def tokenizer(max_length: int):
  """The MiniLM WordPiece tokenizer (uncased, 30,522 tokens), truncating and padding to `max_length`."""
  from tokenizers import Tokenizer
  if max_length < 4:
    raise UserError(f"features.max_length={max_length} is too short; use at least 4 (48 fits 95% of rt and tweets)")
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


def embed_tokens(tokens: dict, batch_size: int, desc: str = "embedding", encoder=None) -> np.ndarray:
  """Mean-pooled encoder features, float32 [n, hidden], in jitted fixed-size batches with a progress bar. `encoder`
  is (Encoder module, params); default the frozen pretrained MiniLM (the pool features). A fine-tuned target's
  encoder gives task-adapted features."""
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
  for start in range(0, n, batch_size):
    stop = min(n, start + batch_size)
    batch = [_pad_rows(tokens[k][start:stop], batch_size) for k in ("input_ids", "attention_mask", "token_type_ids")]
    out[start:stop] = np.asarray(forward(params, *batch))[: stop - start]
    bar.update(stop - start)
  bar.close()
  return out


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  """Pads the leading axis with zero rows to a fixed size so the jitted forward compiles once."""
  if x.shape[0] == rows:
    return x
  return np.concatenate([x, np.zeros((rows - x.shape[0],) + x.shape[1:], x.dtype)])


def cached_embeddings(workdir: str, task: str, split: str, ids: np.ndarray, tokens: dict, max_length: int,
                      batch_size: int) -> np.ndarray:
  """Loads the split's features from the workdir cache, computing and saving them on a miss."""
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
  emb = embed_tokens(tokens, batch_size, desc=f"embedding {task}/{split}")
  os.makedirs(path.parent, exist_ok=True)
  atomic_save_npy(path, emb)
  print(f"[features] {task}/{split}: {emb.shape[0]} examples embedded in {time.time() - t0:.1f}s -> {path}", flush=True)
  return emb
