"""Names that moved keep importing from their old modules, with one warning each."""

from __future__ import annotations

import importlib
import warnings

import pytest

from moma.moved import MOVED

OLD_PATHS = [(old, name, new) for old, names in MOVED.items() for name, new in names.items()]


@pytest.mark.parametrize("old,name,new", OLD_PATHS, ids=[f"{o}.{n}" for o, n, _ in OLD_PATHS])
def test_an_old_import_path_still_works_and_warns_once(old, name, new):
    module = importlib.import_module(old)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        first = getattr(module, name)
        again = getattr(module, name)
    assert first is again is getattr(importlib.import_module(new), name)
    moved = [w for w in seen if issubclass(w.category, DeprecationWarning)]
    assert len(moved) <= 1  # once per name and process (an earlier test may have used it)
    assert all(f"{old}.{name} moved to {new}.{name}" in str(w.message) for w in moved)


def test_an_unknown_name_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        importlib.import_module("moma.train.atomic").nothing  # noqa: B018
