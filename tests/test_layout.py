"""The README's layout list stays true: every module of the package is named there, and nothing that is gone."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_readme_lists_every_module():
  readme = (ROOT / "README.md").read_text()
  block = readme[readme.index("## Layout"):readme.index("## Tests")]
  listed = set(re.findall(r"^(rlsel/\S+\.py)", block, flags=re.M))
  modules = {str(p.relative_to(ROOT)) for p in (ROOT / "rlsel").rglob("*.py")
             if p.name != "__init__.py" or p.parent.name in ("agents", "gradients")}
  assert sorted(modules - listed) == [], "modules missing from the README's layout list"
  assert sorted(listed - modules) == [], "the README's layout list names modules that do not exist"
