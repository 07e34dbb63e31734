from __future__ import annotations

import pytest
from attack_game import Game, make_game


@pytest.fixture(scope="session")
def game(tmp_path_factory: pytest.TempPathFactory) -> Game:
    """A target that memorised its 100 members; 8 references on halves of the pool."""
    return make_game(tmp_path_factory.mktemp("references"))


@pytest.fixture(scope="session")
def null_game(tmp_path_factory: pytest.TempPathFactory) -> Game:
    """The same game, but the target trained on data outside the pool: nothing to find."""
    return make_game(tmp_path_factory.mktemp("null-references"), disjoint=True)
