from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    # On a two-core machine that is also running other jobs, two torch threads contend and a tiny
    # fit takes seconds instead of a fraction of one. Module scope: autouse fixtures come first
    # within their scope, so the module-scoped model fixtures also run with one thread.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
