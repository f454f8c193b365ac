"""One local[2] Spark session for the whole test session (the engine reuses an active session):
starting a JVM costs ~10 s, so no test starts its own. Without pyspark the Spark tests are skipped,
except in CI (CI=true), where set-up installs pyspark and a JRE and a missing one is a failure."""

from __future__ import annotations

import os
from typing import Iterator

import pytest


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    if os.environ.get("CI") != "true":
        pytest.importorskip("pyspark", reason="pip install 'recsys-widedeep[spark]' to run the Spark tests")
    from pyspark.sql import SparkSession

    from recsys.features.engine.spark import SparkSettings, require_spark, session_conf

    require_spark()
    conf = session_conf(SparkSettings(master="local[2]", conf=(
        ("spark.ui.enabled", "false"), ("spark.ui.showConsoleProgress", "false"),
        ("spark.sql.shuffle.partitions", "4"), ("spark.default.parallelism", "2"))))
    session = SparkSession.builder.config(conf=conf).getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
