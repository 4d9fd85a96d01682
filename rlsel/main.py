"""rlsel's command line: `python -m rlsel.main --config=configs/glue.py[:task] --workdir=DIR [--config.field=value]`.

Runs every (seed, selector) cell of the config through select -> fine-tune -> evaluate, writes `results.json`,
`results.md` and `selections/` into DIR, and prints the table. Running again with the same DIR resumes. Bad input
ends with one line on stderr and exit status 2, before anything is written.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/glue.py or configs/glue.py:tweets.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for results, selections, feature caches and checkpoints.")

EXIT_BAD_INPUT = 2


def fail(message: str) -> None:
  """One line on stderr, exit status 2."""
  line = " ".join(str(message).split())
  sys.stderr.write(f"rlsel: error: {line}\n")
  sys.exit(EXIT_BAD_INPUT)


def repeated_overrides(argv) -> list:
  """`--config.<field>` overrides given more than once, in order of first repeat. absl does not take the last one:
  for a tuple field (selectors, seeds) it joins the values, so `--config.selectors=a --config.selectors=b` would
  run both."""
  seen, out = set(), []
  for arg in argv[1:]:
    if arg == "--":
      break
    if arg.startswith("--config.") and len(arg) > len("--config."):
      key = arg[len("--"):].split("=", 1)[0]
      if key in seen and key not in out:
        out.append(key)
      seen.add(key)
  return out


def parse_flags(argv):
  """absl flag parsing, with any flag or config-override error reduced to one line."""
  repeated = repeated_overrides(argv)
  if repeated:
    fail(f"--{repeated[0]} is given more than once; give each --config.<field> once (a list as one value, e.g. "
         "--config.selectors=random,rl_ppo)")
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # flags.Error, and errors raised while loading or overriding the config file
    fail(f"{' '.join(str(e).split())}; check the --config file and the --config.<field> overrides (the fields are "
         "listed in rlsel/configlib.py)")


def load_config():
  """The config file's locked ConfigDict; a missing or broken file ends in one line."""
  try:
    config = _CONFIG.value
    if config is not None:
      config.get("task")  # a config that failed to load is a placeholder that raises on first use
  except Exception as e:  # ml_collections defers config-file errors to first access
    msg = " ".join(str(e).split()).replace("Configuration is not available because of an earlier failure to load: ", "")
    fail(f"could not load the config: {msg}")
  if config is None:
    fail("--config is required, e.g. --config=configs/glue.py")
  return config


def note_unread_overrides(config) -> None:
  """Says (one line on stdout, before any work) which --config.* overrides this run never reads, so a setting meant
  for another selector or track is not silently taken for an effect."""
  from rlsel import validation
  try:
    overrides = config_flags.get_override_values(flags.FLAGS["config"])
  except Exception:  # no overrides recorded (e.g. called outside absl's flag parsing)
    return
  unread = validation.unread_overrides(config, overrides)
  if unread:
    print(f"note: {', '.join('--config.' + k for k in unread)} "
          f"{'is' if len(unread) == 1 else 'are'} not read by this run (no chosen selector or track uses "
          f"{'it' if len(unread) == 1 else 'them'}), so {'it changes' if len(unread) == 1 else 'they change'} "
          "nothing", flush=True)


def main(argv) -> None:
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.ERROR)  # keep library chatter (orbax, datasets) out of the run's output
  from rlsel.errors import UserError
  config = load_config()
  note_unread_overrides(config)
  if "rlvr" in config:  # the RL-fine-tuning track (configs/rlvr.py) has its own runner
    return run_rlvr(config)
  try:
    from rlsel import validation
    validation.validate(config)
    validation.check_workdir(_WORKDIR.value)
    validation.check_workdir_contents(_WORKDIR.value)
    from rlsel import distributed
    distributed.maybe_initialize(config)  # multi-host start-up before any device is touched; no-op on one host
    from rlsel import harness, results
    rows = harness.run(config, _WORKDIR.value)
  except UserError as e:
    fail(str(e))
  print("\n" + results.table(rows) + "\n")
  print(f"results: {os.path.join(_WORKDIR.value, 'results.json')}, {os.path.join(_WORKDIR.value, 'results.md')}; "
        f"selections in {os.path.join(_WORKDIR.value, 'selections')}", flush=True)


def run_rlvr(config) -> None:
  """GRPO on a verifiable task with prompt-selection methods (`rlsel/rlvr/run.py`)."""
  from rlsel.errors import UserError
  try:
    from rlsel import validation
    validation.check_workdir(_WORKDIR.value)
    from rlsel.rlvr import run as rlvr_run
    rows = rlvr_run.run(config, _WORKDIR.value)
  except UserError as e:
    fail(str(e))
  from rlsel.rlvr import report
  print("\n" + report.summary(rows) + "\n\n" + report.table(rows) + "\n")
  print(f"results: {os.path.join(_WORKDIR.value, config.rlvr.results_file)}, "
        f"{os.path.join(_WORKDIR.value, 'results.md')}, plots in {os.path.join(_WORKDIR.value, 'plots')}", flush=True)


def run() -> None:
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
