"""Shared test paths. CI clones the repo with ``shared/`` beside it, as on developers' machines."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = REPO / "audio_fixtures"
