"""Subset selectors under one interface; see `base.py`."""

from rlsel.selectors.base import (Pool, RunDirs, Selection, Selector, Split, budget_size, check_selection, make, names,
                                  register)

__all__ = ["Pool", "RunDirs", "Selection", "Selector", "Split", "budget_size", "check_selection", "make", "names",
           "register"]
