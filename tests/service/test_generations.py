from __future__ import annotations

from service.generations import Generations


def test_the_young_generation_turns_old_when_full_and_the_old_one_is_forgotten() -> None:
    kept: Generations[str, int] = Generations(4)  # two generations of two
    for i, key in enumerate("abcde"):
        kept.put(key, i)
    assert kept.old == {"c": 2, "d": 3} and kept.young == {"e": 4}
    assert kept.get("a") is None and kept.get("b") is None  # forgotten whole
    # Found in the old generation: moved back to the young one (which, full, turns).
    assert kept.get("c") == 2
    assert kept.young == {"e": 4, "c": 2}
    assert kept.get("f") is None
    kept.put("f", 5)
    assert kept.old == {"e": 4, "c": 2} and kept.young == {"f": 5}


def test_a_lookup_of_many_keys_says_which_are_not_kept() -> None:
    kept: Generations[str, int] = Generations(4)
    for i, key in enumerate("abc"):
        kept.put(key, i)
    assert kept.old == {"a": 0, "b": 1}
    found, miss = kept.lookup(["c", "x", "a", "y"])
    assert found == [2, None, 0, None] and miss == [1, 3]
    assert "a" in kept.young  # found old, moved young
    kept.clear()
    assert kept.lookup(["a"]) == ([None], [0])
