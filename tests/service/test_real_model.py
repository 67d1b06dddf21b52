"""The real serving path: LightGBM -> ONNX artifacts in MLflow -> ServedModel -> gRPC.

Composed exactly as ``liverec serve`` composes it (:func:`service.cli.build_app`):
Feast online store, MLflow champions, ``features.served_model.ServedModel``. The
boosters are trained on synthetic rows (deterministic, one thread) only to have a
real artifact; their predictions mean nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from features.vector import CONVERSION, NEXT_PRODUCT, GridBlocks, ModelSpec
from service import scoring
from service.cli import build_app
from service.domain import Deadline, NextProductQuery
from service.errors import DeadlineExceeded
from service.generated.livecommerce.v1 import live_recommender_pb2 as pb
from service.scoring import Scorer
from service.settings import CONVERSION_MODEL, NEXT_PRODUCT_MODEL
from tests.service.conftest import RPC_S, ServerThread, World, make_settings
from tests.service.registry_helpers import register_served, served_dir


def _register(uri: str, tmp: Path, name: str, spec: ModelSpec, seed: int) -> str:
    """Log and register like training.register does (served files as extra_files)."""
    served = served_dir(tmp / f"{name}-{seed}", spec, seed)
    return register_served(uri, served, name)


@pytest.fixture(scope="module")
def real(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    tmp = tmp_path_factory.mktemp("real")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    for name, spec in ((CONVERSION_MODEL, CONVERSION), (NEXT_PRODUCT_MODEL, NEXT_PRODUCT)):
        _register(uri, tmp, name, spec, seed=1)
    # Scoring only: live state would be rebuilt into (and written over) the shared world.
    # The boosters have 15 trees: in groups of 3, a room's grid is kept in 5 groups.
    settings = make_settings(
        world, tmp, mlflow_tracking_uri=uri, ingest_enabled=False, room_tree_group=3
    )
    server = ServerThread(lambda: build_app(settings))
    server.wait_serving()
    server.uri = uri  # type: ignore[attr-defined]
    server.tmp = tmp  # type: ignore[attr-defined]
    yield server
    server.close()


def test_real_models_answer_every_scoring_rpc(real: ServerThread, world: World) -> None:
    scores = real.stub.ScoreConversion(
        pb.ScoreConversionRequest(room_id=world.room, viewer_ids=world.present[:10]), timeout=RPC_S
    )
    assert scores.meta.model.version == "1"
    assert not scores.meta.flags.fallback
    assert all(0 <= s.probability <= 1 for s in scores.scores)
    assert any(s.reasons for s in scores.scores)
    ranked = real.stub.RankProducts(
        pb.RankProductsRequest(
            room_id=world.room,
            viewer_id=world.present[0],
            candidate_product_ids=world.products[:50],
        ),
        timeout=RPC_S,
    )
    assert len(ranked.products) == 10 and ranked.meta.model.name == NEXT_PRODUCT_MODEL
    nxt = real.stub.RecommendNextProduct(
        pb.RecommendNextProductRequest(
            room_id=world.room, candidate_product_ids=world.products[:10]
        ),
        timeout=RPC_S,
    )
    assert nxt.viewers_present == len(world.present)
    assert nxt.products[0].expected_conversions > 0


def test_scoring_asked_again_looks_its_rows_up_and_answers_the_same(
    real: ServerThread, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RankProducts and ScoreConversion keep their rows' scores by branch key: asked again,
    nothing is scored and the answers are the same."""
    models = [real.app.models.get(NEXT_PRODUCT_MODEL), real.app.models.get(CONVERSION_MODEL)]
    kept = [m.kept for m in models if m is not None and m.kept is not None]
    assert len(kept) == 2
    # The time stands still, so no time feature can cross a split between the two asks.
    now = real.app.features.clock()
    monkeypatch.setattr(real.app.features, "clock", lambda: now)

    def ask() -> list[Any]:
        ranked = [
            real.stub.RankProducts(
                pb.RankProductsRequest(
                    room_id=world.room, viewer_id=v, candidate_product_ids=world.products[:30]
                ),
                timeout=RPC_S,
            )
            for v in world.present[:5]
        ]
        scored = real.stub.ScoreConversion(
            pb.ScoreConversionRequest(room_id=world.room, viewer_ids=world.present[:20]),
            timeout=RPC_S,
        )
        return [*(list(r.products) for r in ranked), list(scored.scores)]

    first = ask()
    counts = [(k.scored, k.looked_up) for k in kept]
    again = ask()
    assert [(k.scored, k.looked_up) for k in kept] == [
        (counts[0][0], counts[0][1] + 5 * 30),
        (counts[1][0], counts[1][1] + 20),
    ]
    assert again == first


def test_a_rooms_grid_asked_again_walks_what_moved_and_answers_the_same_bits(
    real: ServerThread, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RecommendNextProduct keeps a room's last grid, each row's margin in each group of
    trees: asked again, only the (row, group) pairs where a value crossed one of the
    group's splits are walked, and the answer is the one a scorer that keeps nothing
    gives, bit for bit."""
    # The rows to walk in parts of a few rows (each on its own bulk job), the rows of
    # another part made while one is walked.
    monkeypatch.setattr(scoring, "GRID_PART_ROWS", 24)
    monkeypatch.setattr(scoring, "WALK_ALONE", 5)
    scorer: Scorer = real.app.scorer
    rooms = scorer.room_scores
    model = real.app.models.get(NEXT_PRODUCT_MODEL)
    assert model is not None and model.groups is not None and model.groups.groups > 2
    groups = model.groups
    keeps_nothing = Scorer(
        scorer.s.model_copy(update={"score_kept_rows": 0}), real.app.features, real.app.models
    )
    keeps_nothing._viewer_static = scoring.ViewerStatic(rooms=0)  # no room's live part
    query = NextProductQuery(world.room, tuple(world.products[:12]), top_k=5)
    start = real.app.features.clock()

    def ask(minutes: float) -> tuple[Any, Any]:
        monkeypatch.setattr(real.app.features, "clock", lambda: start + 60 * minutes)
        return (
            scorer.recommend_next_product(query, Deadline.after(RPC_S)),
            keeps_nothing.recommend_next_product(query, Deadline.after(RPC_S)),
        )

    def counts() -> tuple[int, int, int, int]:
        return (rooms.scored, rooms.looked_up, rooms.groups_scored, rooms.groups_looked_up)

    kept, fresh = ask(0)
    assert kept == fresh and kept.viewers_present == len(world.present) > 2
    rows = len(world.present) * len(query.candidates)
    room_key = (world.room, query.candidates)
    first = rooms.get(room_key, model)
    assert first is not None
    # The time held: nothing moved, nothing is walked, and the kept cross rows are taken
    # as they stand (not one made again).
    before = counts()
    cross_block = scoring.cross_block
    made: list[int] = []

    def counted_cross(v: Any, *args: Any, **kwargs: Any) -> Any:
        made.append(len(v["region"]))
        return cross_block(v, *args, **kwargs)

    monkeypatch.setattr(scoring, "cross_block", counted_cross)
    again, fresh = ask(0)
    monkeypatch.setattr(scoring, "cross_block", cross_block)
    assert again == fresh == kept
    held = rooms.get(room_key, model)
    assert (
        made == []
        and held is not None
        and held is not first
        and held.blocks.cross is first.blocks.cross
    )
    assert counts() == (
        before[0],
        before[1] + rows,
        before[2],
        before[3] + rows * groups.groups,
    )

    # One viewer's column made missing, one that some groups of trees split on but not
    # all: that viewer's rows alone are walked again, through those groups alone.
    def splitting(column: str) -> int:
        probe = np.zeros((1, len(NEXT_PRODUCT.columns)), dtype=np.float32)
        missing = probe.copy()
        missing[0, NEXT_PRODUCT.columns.index(column)] = np.nan
        return int(groups.keys.moved(missing, probe).sum())

    split_on = model.most_split(CONVERSION.columns, len(CONVERSION.columns))
    column = next(c for c in split_on if 0 < splitting(c) < groups.groups)
    some = splitting(column)
    viewer_block = Scorer._viewers_block

    def moved_one(self: Scorer, viewers: Any, *args: Any, **kwargs: Any) -> Any:
        block = dict(viewer_block(self, viewers, *args, **kwargs))
        block[column] = np.asarray(block[column], dtype=np.float32).copy()
        block[column][viewers.index(world.present[0])] = np.nan
        return block

    monkeypatch.setattr(Scorer, "_viewers_block", moved_one)
    before = counts()
    kept, fresh = ask(0)
    assert kept == fresh
    n = len(query.candidates)
    assert counts() == (
        before[0] + n,
        before[1] + rows - n,
        before[2] + n * some,
        before[3] + rows * groups.groups - n * some,
    )

    # Back as it was; then one viewer's cart takes a candidate: its cross rows alone are
    # made again (the others' are taken as kept, their inputs the same bits), and walked
    # where they moved.
    monkeypatch.setattr(Scorer, "_viewers_block", viewer_block)
    kept, fresh = ask(0)
    assert kept == fresh

    def carted(self: Scorer, viewers: Any, *args: Any, **kwargs: Any) -> Any:
        block = dict(viewer_block(self, viewers, *args, **kwargs))
        block["_cart"] = block["_cart"].copy()
        block["_cart"][viewers.index(world.present[1])] = query.candidates[0]
        return block

    made.clear()
    monkeypatch.setattr(scoring, "cross_block", counted_cross)
    monkeypatch.setattr(Scorer, "_viewers_block", carted)
    kept, fresh = ask(0)
    assert kept == fresh
    assert made == [1]  # one viewer's cross rows made (the scorer keeping nothing makes
    # its grid's whole, inside assemble_grid, via _grid_in_parts)
    monkeypatch.setattr(scoring, "cross_block", cross_block)
    # A viewer leaves and one joins (no rows of its own: a cold start): the newcomer's rows
    # walk every group, the others are matched by id.
    present = real.app.features.present_viewers
    monkeypatch.setattr(
        real.app.features,
        "present_viewers",
        lambda room, deadline: [*(present(room, deadline) or [])[1:], "v-newcomer"],
    )
    before = counts()
    kept, fresh = ask(0)
    assert kept == fresh and kept.viewers_present == len(world.present)
    assert counts()[2] - before[2] >= n * groups.groups
    monkeypatch.setattr(real.app.features, "present_viewers", present)
    # Later, the time features moved (pairs across a split are walked, the rest kept).
    for minutes in (2, 9, 47, 180):
        kept, fresh = ask(minutes)
        assert kept == fresh, minutes
    # Every viewer's value of that column made missing: most rows walk (some groups),
    # their viewers alike together.
    ordered: list[int] = []
    walk_order = scoring._walk_order

    def spied(walk: np.ndarray, *args: Any) -> Any:
        ordered.append(len(walk))
        return walk_order(walk, *args)

    def all_missing(self: Scorer, viewers: Any, *args: Any, **kwargs: Any) -> Any:
        block = dict(viewer_block(self, viewers, *args, **kwargs))
        block[column] = np.full(len(viewers), np.nan, dtype=np.float32)
        return block

    monkeypatch.setattr(scoring, "_walk_order", spied)
    monkeypatch.setattr(Scorer, "_viewers_block", all_missing)
    kept, fresh = ask(180)
    assert kept == fresh and ordered == [rows]
    monkeypatch.setattr(Scorer, "_viewers_block", viewer_block)
    # The counts are the server's metric.
    sample = real.app.metrics.registry.get_sample_value
    for how, value, pairs in (
        ("scored", rooms.scored, rooms.groups_scored),
        ("looked_up", rooms.looked_up, rooms.groups_looked_up),
    ):
        labels = {"model": NEXT_PRODUCT_MODEL, "kept_by": "room", "how": how}
        assert sample("liverec_model_rows_total", labels) == value > 0
        labels = {"model": NEXT_PRODUCT_MODEL, "how": how}
        assert sample("liverec_model_row_groups_total", labels) == pairs > value


def test_a_rooms_grid_past_its_deadline_keeps_the_last_grid(
    real: ServerThread, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows to walk are built and submitted in parts: past the deadline the rest is
    not built, the call fails, and the room's last grid and the counts stay as they were
    (the next call in time answers as a scorer keeping nothing)."""
    monkeypatch.setattr(scoring, "GRID_PART_ROWS", 24)
    monkeypatch.setattr(scoring, "WALK_ALONE", 5)
    scorer: Scorer = real.app.scorer
    rooms = scorer.room_scores
    model = real.app.models.get(NEXT_PRODUCT_MODEL)
    assert model is not None
    query = NextProductQuery(world.room, tuple(world.products[3:10]), top_k=3)
    now = real.app.features.clock()
    monkeypatch.setattr(real.app.features, "clock", lambda: now)  # answers compared whole
    scorer.recommend_next_product(query, Deadline.after(RPC_S))
    grid = rooms.get((world.room, query.candidates), model)
    assert grid is not None
    counts = (rooms.scored, rooms.looked_up, rooms.groups_scored, rooms.groups_looked_up)
    # Every viewer's most split column made missing: every row walks, in several parts.
    column = model.most_split(CONVERSION.columns, 1)[0]
    viewer_block = Scorer._viewers_block

    def all_missing(self: Scorer, viewers: Any, *args: Any, **kwargs: Any) -> Any:
        block = dict(viewer_block(self, viewers, *args, **kwargs))
        block[column] = np.full(len(viewers), np.nan, dtype=np.float32)
        return block

    made: list[int] = []
    rows_of = GridBlocks.rows

    def rows(self: GridBlocks, idx: np.ndarray) -> np.ndarray:
        made.append(len(idx))
        return rows_of(self, idx)

    class Expiring(Deadline):
        """Passes once the first part's rows are made."""

        def remaining(self) -> float:
            return -1.0 if made else RPC_S

    monkeypatch.setattr(Scorer, "_viewers_block", all_missing)
    monkeypatch.setattr(GridBlocks, "rows", rows)
    with pytest.raises(DeadlineExceeded, match="deadline passed"):
        scorer.recommend_next_product(query, Expiring(0.0))
    assert len(made) == 1 and made[0] < len(world.present) * len(query.candidates)
    assert rooms.get((world.room, query.candidates), model) is grid
    assert (rooms.scored, rooms.looked_up, rooms.groups_scored, rooms.groups_looked_up) == counts
    keeps_nothing = Scorer(
        scorer.s.model_copy(update={"score_kept_rows": 0}), real.app.features, real.app.models
    )
    kept = scorer.recommend_next_product(query, Deadline.after(RPC_S))
    assert kept == keeps_nothing.recommend_next_product(query, Deadline.after(RPC_S))


def test_a_room_of_one_viewer_or_of_one_candidate_answers_the_same_bits(
    real: ServerThread, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    features, models = real.app.features, real.app.models
    start = features.clock()
    for update, candidates in (
        ({"max_present_viewers": 1}, world.products[:6]),
        ({}, world.products[:1]),
    ):
        settings = real.app.scorer.s.model_copy(update=update)
        keeping = Scorer(settings, features, models)
        nothing = Scorer(settings.model_copy(update={"score_kept_rows": 0}), features, models)
        nothing._viewer_static = scoring.ViewerStatic(rooms=0)
        query = NextProductQuery(world.room, tuple(candidates), top_k=3)
        for minutes in (0, 0, 30, 400):
            monkeypatch.setattr(features, "clock", lambda m=minutes: start + 60 * m)
            kept = keeping.recommend_next_product(query, Deadline.after(RPC_S))
            assert kept == nothing.recommend_next_product(query, Deadline.after(RPC_S))
            assert kept.viewers_present == (1 if update else len(world.present))
        assert keeping.room_scores.looked_up > 0  # asked again, rows were kept


def test_real_model_hot_swap_follows_the_alias(real: ServerThread, world: World) -> None:
    version = _register(real.uri, real.tmp, NEXT_PRODUCT_MODEL, NEXT_PRODUCT, seed=2)  # type: ignore[attr-defined]
    assert real.app.models.poll()[NEXT_PRODUCT_MODEL] == "swapped"
    ranked = real.stub.RankProducts(
        pb.RankProductsRequest(
            room_id=world.room, viewer_id=world.present[0], candidate_product_ids=world.products[:5]
        ),
        timeout=RPC_S,
    )
    assert ranked.meta.model.version == version


def test_liverec_serve_writes_the_ready_file_and_drains_on_sigterm(
    real: ServerThread, world: World, tmp_path: Path
) -> None:
    """The real CLI in its own process: ready file once SERVING, SIGTERM -> clean exit."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    ready = tmp_path / "ready.json"
    env = {
        **os.environ,
        "LIVEREC_DATA_DIR": str(world.data_dir),
        "LIVEREC_MLFLOW_TRACKING_URI": real.uri,  # type: ignore[attr-defined]
        "LIVEREC_MODELS_DIR": str(tmp_path / "models"),
        "LIVEREC_METRICS_PORT": "0",
        "LIVEREC_INGEST_ENABLED": "false",  # the shared world stays as built
    }
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [
            sys.executable,
            str(root / "liverec.py"),
            "serve",
            "--port",
            "0",
            "--ready-file",
            str(ready),
        ],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The ready file is the readiness signal of a process we cannot call into.
        give_up = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < give_up, "no ready file after 120 s"
            time.sleep(0.1)
        info = json.loads(ready.read_text())
        assert info["pid"] == proc.pid and info["metrics_port"] > 0
        with grpc.insecure_channel(f"127.0.0.1:{info['grpc_port']}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=RPC_S)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
