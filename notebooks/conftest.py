"""nbval runs every lesson under `make test`; a lesson that needs an optional package that is not
installed (its metadata's "minidiff": {"requires": […]}) is skipped, with the reason and how to
install it, instead of failing."""

from functools import cache
from pathlib import Path

import pytest

from minidiff.course import missing_requirement

_missing = cache(missing_requirement)  # read each notebook's metadata once


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.path))
        reason = _missing(path) if path.suffix == ".ipynb" else None
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"{path.name} {reason}"))
