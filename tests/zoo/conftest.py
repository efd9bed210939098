"""Zoo test helpers: one thread for torch (the small models gain nothing from more,
and the suite shares its cores), and small zoo models built once per session."""
from __future__ import annotations

import functools

import pytest
import torch

from normfold.zoo import build


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread):
    yield


@functools.lru_cache(maxsize=None)
def _small(name: str, seed: int) -> torch.nn.Module:
    return build(name, seed=seed, small=True)


@pytest.fixture(scope="session")
def small_model():
    """``small_model(name, seed=0)``: ``build(name, seed=seed, small=True)``, cached; do not modify it."""
    return lambda name, seed=0: _small(name, seed)
