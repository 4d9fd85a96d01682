"""Subset selectors under one interface; see `base.py`."""

from rlsel.selectors.base import Pool, Selector, Split, budget_size, check_selection, make, names, register
