"""Candidate retrieval in front of the ranker: a two-tower model and an ANN index over the catalog.

`recsys train-retrieval` trains the towers (training.py), `recsys index` embeds every item of the
items table (catalog.py) and builds the faiss index (index.py); both live inside the ranker's
artifact and load as one `Retriever` (retriever.py). evaluation.py holds the Recall@K protocol.
"""

from recsys.retrieval.retriever import Retriever
from recsys.retrieval.two_tower import TowerColumns, TwoTower, TwoTowerConfig

__all__ = ["Retriever", "TwoTower", "TwoTowerConfig", "TowerColumns"]
