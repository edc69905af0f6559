"""The chaos suite's hostile input: every kind, and few values of several MB (a broker keeps
each of them in full)."""

from collections import Counter

from cartstream.core.settings import Settings
from cartstream.services.tools.chaos.fuzz import (
    DEAD_LETTER_KINDS,
    HARMLESS_KINDS,
    HUGE_EVERY,
    HostileInput,
)


def test_hostile_input_has_every_kind_and_few_values_of_several_mb() -> None:
    kinds = Counter(h.kind for h in HostileInput(Settings(), seed=3).records(2 * HUGE_EVERY))
    assert set(kinds) == {*DEAD_LETTER_KINDS, *HARMLESS_KINDS}
    assert kinds["huge"] == 2
