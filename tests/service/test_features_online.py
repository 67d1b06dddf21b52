"""The online feature cache over the real tiny-world store."""

from __future__ import annotations

from collections.abc import Sequence

from service.feast_reader import FeastReader, Row
from service.features_online import OnlineFeatures
from tests.service.conftest import World


class _Changing:
    """A reader whose product_stats rows for ``changed`` come back changed."""

    def __init__(self, inner: FeastReader) -> None:
        self.inner = inner
        self.changed: set[str] = set()

    def read(self, view: str, keys: Sequence[tuple[str, ...]]) -> list[Row | None]:
        rows = self.inner.read(view, keys)
        if view != "product_stats":
            return rows
        return [
            dict(r, price_usd=float(r["price_usd"]) + 1.0) if r and k[0] in self.changed else r
            for k, r in zip(keys, rows, strict=True)
        ]

    def present_viewers(self) -> dict[str, list[str]]:
        return self.inner.present_viewers()


def test_a_product_refresh_keeps_the_rows_it_reads_unchanged(world: World) -> None:
    """The product cache's refresh reads every row again (new objects); a row equal to the
    one cached keeps the cached object, so what scoring keeps while its rows are the same
    objects survives the refresh, and a changed row replaces it."""
    reader = _Changing(world.reader)
    features = OnlineFeatures(reader)
    products = list(world.products[:6])
    assert features.warm_products(products) == len(products)
    before = features.cached_products(products)
    assert before is not None and all(r is not None for r in before)
    reader.changed = {products[2]}
    features.refresh_products()
    after = features.cached_products(products)
    assert after is not None
    for i, (old, new) in enumerate(zip(before, after, strict=True)):
        if i == 2:
            assert new is not old and new is not None and old is not None
            assert new["price_usd"] == old["price_usd"] + 1.0
        else:
            assert new is old
