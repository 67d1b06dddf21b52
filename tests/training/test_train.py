"""Training mechanics: the Dask path produces a servable booster."""

from __future__ import annotations

import numpy as np

from features.vector import CONVERSION
from training import data
from training.train import start_dask, train_model


def test_dask_training_gives_a_calibrated_booster(conversion_set: data.TrainingSet) -> None:
    client = start_dask(None, num_threads=1)
    try:
        assert len(client.scheduler_info()["workers"]) == 2
        trained = train_model(conversion_set, CONVERSION, 1, 7, client, max_rounds=20)
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    assert 1 <= trained.best_iteration <= 20
    assert trained.booster.num_trees() == trained.best_iteration
    p = trained.predict(conversion_set.matrix(rows=conversion_set.part("test")))
    assert np.all((p > 0) & (p < 1))
