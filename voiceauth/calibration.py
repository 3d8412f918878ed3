"""Decision thresholds measured by ``voice eval`` for a target false-accept rate, per model and codec.

Files live in ``voiceauth/calibration/<model>_<codec>.json`` (or a directory you pass): a list of
entries, one per test duration (``seconds`` null = full utterances). Re-run the eval on your own
calls and point ``calibration_dir`` at the result to recalibrate.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import CalibrationError

__all__ = ["CalibrationEntry", "DEFAULT_DIR", "load_calibration", "threshold_for", "write_calibration"]

DEFAULT_DIR = Path(__file__).resolve().parent / "calibration"


@dataclass(frozen=True, slots=True)
class CalibrationEntry:
    model: str
    codec: str
    seconds: float | None
    target_far: float
    threshold: float
    eer: float
    eer_threshold: float
    n_target: int
    n_nontarget: int
    trials: str


def _path(model: str, codec: str, directory: Path | str | None) -> Path:
    return Path(directory or DEFAULT_DIR) / f"{model}_{codec}.json"


def load_calibration(model: str, codec: str = "ulaw", directory: Path | str | None = None) -> list[CalibrationEntry]:
    p = _path(model, codec, directory)
    if not p.is_file():
        raise CalibrationError(f"no calibration for model {model!r}, codec {codec!r} ({p} missing); run "
                               f"`contact-server voice eval TRIALS.csv --model {model} --codec {codec} "
                               f"--write-calibration {p.parent}`")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        return [CalibrationEntry(**e) for e in data["entries"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise CalibrationError(f"calibration file {p} is malformed: {exc}") from None


def threshold_for(model: str, codec: str = "ulaw", seconds: float | None = None, *,
                  target_far: float | None = None, directory: Path | str | None = None) -> float:
    """The calibrated threshold whose test duration is closest to ``seconds`` (None = full utterances)."""
    entries = load_calibration(model, codec, directory)
    if target_far is not None:
        entries = [e for e in entries if abs(e.target_far - target_far) < 1e-12]
        if not entries:
            raise CalibrationError(f"no calibration of {model}/{codec} for target FAR {target_far}")

    def dist(e: CalibrationEntry) -> float:
        if seconds is None:
            return 0.0 if e.seconds is None else 1e6 - e.seconds
        return abs((e.seconds if e.seconds is not None else 1e6) - seconds)

    return min(entries, key=dist).threshold


def write_calibration(entry: CalibrationEntry, directory: Path | str | None = None) -> Path:
    """Insert or replace the entry for (target FAR, seconds) in the model/codec file."""
    p = _path(entry.model, entry.codec, directory)
    p.parent.mkdir(parents=True, exist_ok=True)
    entries = load_calibration(entry.model, entry.codec, p.parent) if p.is_file() else []
    entries = [e for e in entries if not (e.seconds == entry.seconds and e.target_far == entry.target_far)]
    entries.append(entry)
    entries.sort(key=lambda e: (e.seconds is None, e.seconds or 0, e.target_far))
    p.write_text(json.dumps({"model": entry.model, "codec": entry.codec,
                             "note": "written by `contact-server voice eval`; accept when cosine >= threshold",
                             "entries": [asdict(e) for e in entries]}, indent=2) + "\n", encoding="utf-8")
    return p
