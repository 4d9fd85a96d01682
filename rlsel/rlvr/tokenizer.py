"""A character-level tokenizer for the small decoder: printable ASCII, one id per character, plus pad/bos/eos/unk.

Every digit is its own token, so arithmetic is learnable by a tiny model; unknown characters map to `unk`.
Batches are left-padded, the layout `rlsel.rlvr.decoder` expects.
"""

import numpy as np

PAD, BOS, EOS, UNK = 0, 1, 2, 3
_FIRST, _LAST = 32, 126  # printable ASCII
_OFFSET = 4


class CharTokenizer:
  """Text <-> ids; `vocab_size` = 4 specials + 95 printable characters."""
  pad_id, bos_id, eos_id, unk_id = PAD, BOS, EOS, UNK
  vocab_size = _OFFSET + _LAST - _FIRST + 1

  def encode(self, text: str, bos: bool = True) -> list:
    ids = [(ord(ch) - _FIRST + _OFFSET) if _FIRST <= ord(ch) <= _LAST else UNK for ch in text]
    return ([BOS] if bos else []) + ids

  def decode(self, ids) -> str:
    """Characters of the ids, stopping at the first EOS and skipping specials."""
    out = []
    for i in ids:
      i = int(i)
      if i == EOS:
        break
      if i >= _OFFSET:
        out.append(chr(i - _OFFSET + _FIRST))
    return "".join(out)


def left_pad(seqs: list, length: int, pad_id: int):
  """Lists of ids -> (ids int32 [n, length], mask bool [n, length]), left-padded; too-long sequences keep their end."""
  ids = np.full((len(seqs), length), pad_id, np.int32)
  mask = np.zeros((len(seqs), length), bool)
  for i, s in enumerate(seqs):
    s = list(s)[-length:]
    if s:
      ids[i, length - len(s):] = s
      mask[i, length - len(s):] = True
  return ids, mask


def right_pad(seqs: list, length: int, pad_id: int):
  """Lists of ids -> (ids int32 [n, length], mask bool [n, length]), right-padded and truncated."""
  ids = np.full((len(seqs), length), pad_id, np.int32)
  mask = np.zeros((len(seqs), length), bool)
  for i, s in enumerate(seqs):
    s = list(s)[:length]
    ids[i, :len(s)] = s
    mask[i, :len(s)] = True
  return ids, mask
