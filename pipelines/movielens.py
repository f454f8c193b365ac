"""MovieLens 100K → the raw-table contract (impressions, users, items). The data stays where it is:
this reads GroupLens's files from a path and writes parquet elsewhere; nothing is redistributed.

label = rating >= 4. Context (hour, weekday) is derived by the spec from the timestamp.
Users: age, gender, occupation, zip prefix. Items: genres as '|'-joined multi-hot, release year and
release timestamp (for the movie's age at rating time).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recsys.errors import DataError
from recsys.io import check_output, output_folder, write_table

__all__ = ["GENRES", "load_movielens", "import_movielens"]

GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
]


def load_movielens(path: str | Path) -> dict[str, pd.DataFrame]:
    path = Path(path)
    for name in ("u.data", "u.user", "u.item"):
        if not (path / name).is_file():
            raise DataError(f"{path} is not a MovieLens 100K folder: {name} missing (fix: pass the ml-100k folder)")
    ratings = pd.read_csv(path / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"])
    users = pd.read_csv(path / "u.user", sep="|", names=["user_id", "age", "gender", "occupation", "zip"])
    items = pd.read_csv(
        path / "u.item", sep="|", encoding="latin-1", header=None,
        names=["item_id", "title", "release_date", "video_release_date", "url", *GENRES],
    )
    flags = items[GENRES].to_numpy(dtype=bool)
    names = np.array(GENRES, dtype=object)
    # '|'-join the set genres of every movie without a per-row loop: one masked string sum per genre.
    genres = np.full(len(items), "", dtype=object)
    for j, g in enumerate(names):
        genres = np.where(flags[:, j], np.where(genres == "", g, genres + "|" + g), genres)
    release = pd.to_datetime(items["release_date"], format="%d-%b-%Y", errors="coerce")
    release_ts = (release - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
    impressions = pd.DataFrame({
        "user_id": ratings["user_id"].astype(str),
        "item_id": ratings["item_id"].astype(str),
        "timestamp": ratings["timestamp"].astype(np.int64),
        "label": (ratings["rating"] >= 4).astype(np.int8),
    }).sort_values("timestamp", kind="stable", ignore_index=True)
    users_out = pd.DataFrame({
        "user_id": users["user_id"].astype(str),
        "age": users["age"].astype(np.float64),
        "gender": users["gender"],
        "occupation": users["occupation"],
        "zip_prefix": users["zip"].astype(str).str[:2],
    })
    items_out = pd.DataFrame({
        "item_id": items["item_id"].astype(str),
        "title": items["title"].fillna(""),
        "genres": genres,
        "release_year": release.dt.year.astype("Float64").astype(np.float64),
        "release_ts": release_ts.astype("Float64").astype(np.float64),
    })
    return {"impressions": impressions, "users": users_out, "items": items_out}


def import_movielens(path: str | Path, out: str | Path) -> dict[str, Path]:
    """The raw tables as parquet in the folder `out` (replaced as a whole: `recsys.io.output_folder`)."""
    check_output(out, "raw-tables", {"PATH": path})  # before the work
    tables = load_movielens(path)
    with output_folder(out, "raw-tables", {"PATH": path}) as tmp:
        for name, frame in tables.items():
            write_table(frame, tmp / f"{name}.parquet")
    return {name: Path(out) / f"{name}.parquet" for name in tables}
