"""Voiceprints and scoring; the one place that refuses to compare two different models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .encoders import l2_normalise
from .errors import ModelMismatch

__all__ = ["Voiceprint", "cosine", "mean_embedding"]


@dataclass(frozen=True, slots=True)
class Voiceprint:
    customer_id: str
    model: str
    embedding: np.ndarray  # L2-normalised float32
    count: int

    @property
    def dimension(self) -> int:
        return int(self.embedding.shape[0])

    def score(self, embedding: np.ndarray, model: str) -> float:
        return cosine(self.embedding, self.model, embedding, model)

    def refreshed(self, embedding: np.ndarray, model: str, weight: float) -> "Voiceprint":
        """Move slowly towards a new strong sample so the print follows voice ageing."""
        cosine(self.embedding, self.model, embedding, model)  # model/dimension check
        if not 0.0 < weight < 1.0:
            raise ValueError(f"refresh weight must be in (0, 1), got {weight}")
        new = l2_normalise((1.0 - weight) * self.embedding + weight * np.asarray(embedding, np.float32))
        return Voiceprint(self.customer_id, self.model, new, self.count + 1)


def cosine(a: np.ndarray, model_a: str, b: np.ndarray, model_b: str) -> float:
    if model_a != model_b:
        raise ModelMismatch(f"refusing to compare a {model_a!r} embedding with a {model_b!r} one; "
                            "re-enroll the customer with the configured model")
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    if a.shape != b.shape:
        raise ModelMismatch(f"embedding shapes differ ({a.shape} vs {b.shape}) for model {model_a!r}")
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def mean_embedding(embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of the normalised embeddings, re-normalised (the GE2E speaker-centroid recipe)."""
    if not embeddings:
        raise ValueError("no embeddings to average")
    return l2_normalise(np.mean([l2_normalise(e) for e in embeddings], axis=0))
