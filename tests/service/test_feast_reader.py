"""The direct SQLite read of the embedded store gives Feast's own rows, value for value."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from service.feast_reader import Row, _decode
from tests.service.conftest import World


def _same(a: Row | None, b: Row | None) -> bool:
    if a is None or b is None:
        return a is b

    def eq(x: Any, y: Any) -> bool:
        return x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x + y))

    return a.keys() == b.keys() and all(eq(a[k], b[k]) for k in a)


def test_direct_sqlite_reads_are_the_rows_feast_reads(world: World) -> None:
    reader = world.reader
    assert reader._sqlite_path is not None, "the embedded profile reads SQLite directly"
    cases: dict[str, Sequence[tuple[str, ...]]] = {
        "viewer_demographics": [(v,) for v in world.viewers[:10]],
        "viewer_profile": [(v,) for v in world.viewers[:10]] + [("nobody",), (world.viewers[0],)],
        "viewer_live": [(v, world.room) for v in world.present[:10]] + [("nobody", world.room)],
        "product_stats": [(p,) for p in world.products[:10]],
        "product_live": [(p, world.room) for p in world.products[:10]],
        "room_state": [(world.room,), ("no-such-room",)],
    }
    found = 0
    for view, keys in cases.items():
        raw = reader._provider.online_read(
            config=reader._config,
            table=reader._view(view),
            entity_keys=[reader._entity_key(view, k) for k in keys],
        )
        feast = [_decode(ts, values) for ts, values in raw]
        for _ in range(2):  # the second time from the key and value caches
            got = reader.read(view, keys)
            assert len(got) == len(keys)
            assert all(_same(g, f) for g, f in zip(got, feast, strict=True)), view
        found += sum(r is not None for r in got)
    assert found > 30  # rows were compared, not only absences
