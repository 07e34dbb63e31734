from __future__ import annotations

import pytest
from attack_game import Game, make_game


@pytest.fixture(scope="module")
def game() -> Game:
    return make_game()
