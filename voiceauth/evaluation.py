"""``voice eval``: speaker-verification accuracy over a trial list, through a simulated phone line.

Trials follow ``shared/voice_data/trials_dev.csv``: enrollment = several files averaged into a
voiceprint, test = one file, score = cosine. Both sides go through G.711 at 8 kHz (as real
enrollment and verification calls do); ``--seconds`` keeps only the start of the test file.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .calibration import CalibrationEntry, write_calibration
from .channel import Codec, resample, simulate_g711
from .encoders import SpeakerEncoder, create_encoder
from .errors import AudioError, VoiceAuthError
from .voiceprint import mean_embedding

log = logging.getLogger(__name__)

__all__ = ["Trial", "read_trials", "load_wav", "eer", "threshold_at_far", "EvalResult", "evaluate",
           "plot_det", "voice_eval_main"]


@dataclass(frozen=True, slots=True)
class Trial:
    model_id: str
    enroll_files: tuple[str, ...]
    test_file: str
    label: int


def read_trials(path: str | Path) -> list[Trial]:
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise VoiceAuthError(f"cannot read trial list {p}: {exc.strerror}") from None
    need = {"model_id", "enroll_files", "test_file", "label"}
    if not rows or not need <= set(rows[0]):
        raise VoiceAuthError(f"{p}: expected a CSV with columns {sorted(need)} (see shared/voice_data/trials_dev.csv)")
    trials = []
    for n, r in enumerate(rows, start=2):
        try:
            trials.append(Trial(r["model_id"], tuple(x for x in r["enroll_files"].split(";") if x), r["test_file"],
                                int(r["label"])))
        except ValueError:
            raise VoiceAuthError(f"{p}:{n}: label must be 0 or 1, got {r['label']!r}") from None
    return trials


def load_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """16-bit PCM WAV -> (mono float32, rate)."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                raise AudioError(f"{path}: only 16-bit PCM WAV is supported (sample width {w.getsampwidth()})")
            ch, rate = w.getnchannels(), w.getframerate()
            data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    except (OSError, wave.Error, EOFError) as exc:
        raise AudioError(f"cannot read WAV {path}: {exc}") from None
    a = data.astype(np.float32) / 32768.0
    if ch > 1:
        a = a.reshape(-1, ch).mean(axis=1)
    return a, rate


# -- metrics ------------------------------------------------------------------------------
def _split(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tgt, non = scores[labels == 1], scores[labels == 0]
    if tgt.size == 0 or non.size == 0:
        raise VoiceAuthError("the trial list needs both target (label 1) and non-target (label 0) trials")
    return tgt, non


def det_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, FAR, FRR) at every distinct score, accepting when score >= threshold."""
    tgt, non = _split(np.asarray(scores, float), np.asarray(labels))
    thr = np.unique(np.concatenate([tgt, non, [np.inf]]))
    far = 1.0 - np.searchsorted(np.sort(non), thr, side="left") / non.size
    frr = np.searchsorted(np.sort(tgt), thr, side="left") / tgt.size
    return thr, far, frr


def eer(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Equal error rate, linearly interpolated where FRR crosses FAR, and the threshold there.

    With few trials the curves are coarse steps; interpolating between the two operating points
    around the crossing avoids reporting half a step as the EER.
    """
    thr, far, frr = det_curve(scores, labels)
    d = far - frr  # decreases with the threshold
    j = int(np.nonzero(d <= 0)[0][0])
    if j == 0 or d[j] == 0:
        return float((far[j] + frr[j]) / 2.0), float(thr[j])
    i = j - 1
    s = d[i] / (d[i] - d[j])
    e = far[i] + s * (far[j] - far[i])
    t = thr[i] + s * (thr[j] - thr[i]) if np.isfinite(thr[j]) else thr[i]
    return float(e), float(t)


def threshold_at_far(scores: np.ndarray, labels: np.ndarray, target_far: float) -> tuple[float, float, float]:
    """Lowest threshold whose FAR <= target: (threshold, FAR, FRR) there."""
    thr, far, frr = det_curve(scores, labels)
    ok = np.nonzero(far <= target_far + 1e-12)[0]
    i = int(ok[0])  # far decreases with the threshold; thr[-1] = inf always qualifies
    t = float(thr[i]) if np.isfinite(thr[i]) else float(np.nextafter(np.max(scores), np.inf))
    return t, float(far[i]), float(frr[i])


@dataclass
class EvalResult:
    model: str
    codec: str
    seconds: float | None
    scores: np.ndarray
    labels: np.ndarray
    trials: int
    target_far: float
    elapsed_s: float

    def summary(self) -> dict:
        e, e_thr = eer(self.scores, self.labels)
        t1, far1, frr1 = threshold_at_far(self.scores, self.labels, 0.01)
        t01, far01, frr01 = threshold_at_far(self.scores, self.labels, 0.001)
        tt, fart, frrt = threshold_at_far(self.scores, self.labels, self.target_far)
        n_t, n_n = int((self.labels == 1).sum()), int((self.labels == 0).sum())
        return {
            "model": self.model, "codec": self.codec, "seconds": self.seconds, "trials": self.trials,
            "n_target": n_t, "n_nontarget": n_n, "eer": e, "eer_threshold": e_thr,
            "frr_at_far_1pct": frr1, "threshold_far_1pct": t1, "far_at_threshold_1pct": far1,
            "frr_at_far_0.1pct": frr01, "threshold_far_0.1pct": t01, "far_at_threshold_0.1pct": far01,
            "target_far": self.target_far, "threshold": tt, "far_at_threshold": fart, "frr_at_threshold": frrt,
            "far_resolution": 1.0 / n_n, "frr_resolution": 1.0 / n_t,
            "target_score_mean": float(self.scores[self.labels == 1].mean()),
            "nontarget_score_mean": float(self.scores[self.labels == 0].mean()),
            "elapsed_s": round(self.elapsed_s, 2),
        }


class _EmbeddingCache:
    """One embedding per (file, cut) so shared enrollment and test files are embedded once."""

    def __init__(self, encoder: SpeakerEncoder, root: Path, codec: Codec) -> None:
        self.encoder, self.root, self.codec = encoder, root, codec
        self._cache: dict[tuple[str, float | None], np.ndarray] = {}

    def _line(self, rel: str, seconds: float | None) -> np.ndarray:
        a, rate = load_wav(self.root / rel)
        if self.codec is Codec.NONE:
            line, line_rate = resample(a, rate, 8000), 8000
        else:
            line, line_rate = simulate_g711(a, rate, self.codec), 8000
        if seconds is not None:
            line = line[: int(seconds * line_rate)]
        return resample(line, line_rate, self.encoder.sample_rate)

    def fill(self, keys: set[tuple[str, float | None]], batch: int = 8) -> None:
        todo = sorted((k for k in keys if k not in self._cache), key=lambda k: (k[0], k[1] or 0))
        for i in range(0, len(todo), batch):
            chunk = todo[i : i + batch]
            embs = self.encoder.embed_batch([self._line(f, s) for f, s in chunk])
            self._cache.update(zip(chunk, embs))

    def __getitem__(self, key: tuple[str, float | None]) -> np.ndarray:
        return self._cache[key]


def evaluate(trials: Sequence[Trial], root: str | Path, encoder: SpeakerEncoder, *, codec: Codec | str = Codec.ULAW,
             seconds: float | None = None, target_far: float = 0.01) -> EvalResult:
    start = time.perf_counter()
    codec = Codec(codec)
    root = Path(root)
    cache = _EmbeddingCache(encoder, root, codec)
    keys = {(f, None) for t in trials for f in t.enroll_files} | {(t.test_file, seconds) for t in trials}
    cache.fill(keys)
    prints: dict[tuple[str, ...], np.ndarray] = {}
    scores = np.empty(len(trials))
    for i, t in enumerate(trials):
        if t.enroll_files not in prints:
            prints[t.enroll_files] = mean_embedding([cache[(f, None)] for f in t.enroll_files])
        scores[i] = float(np.dot(prints[t.enroll_files], cache[(t.test_file, seconds)]))
    labels = np.array([t.label for t in trials])
    return EvalResult(encoder.name, codec.value, seconds, scores, labels, len(trials), target_far,
                      time.perf_counter() - start)


def plot_det(results: Sequence[EvalResult], path: str | Path) -> Path:
    """DET plot (probit axes) of one or more runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    fig, ax = plt.subplots(figsize=(5.5, 5.5), dpi=100)
    lo = 1e-3
    for r in results:
        _, far, frr = det_curve(r.scores, r.labels)
        x = norm.ppf(np.clip(far, lo / 2, 1 - lo / 2))
        y = norm.ppf(np.clip(frr, lo / 2, 1 - lo / 2))
        s = r.summary()
        cut = "full" if r.seconds is None else f"{r.seconds:g} s"
        ax.step(x, y, where="post", label=f"{r.model} {r.codec} {cut}: EER {100 * s['eer']:.1f}%")
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8])
    ax.set_xticks(norm.ppf(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_yticks(norm.ppf(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_xlim(norm.ppf(lo / 2), norm.ppf(0.9))
    ax.set_ylim(norm.ppf(lo / 2), norm.ppf(0.9))
    ax.plot([-5, 5], [-5, 5], ls=":", color="grey", lw=0.8)
    ax.set_xlabel("False accept rate (%)")
    ax.set_ylabel("False reject rate (%)")
    ax.set_title("DET: voice verification")
    ax.grid(True, ls=":", lw=0.5)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _format(s: dict) -> str:
    cut = "full" if s["seconds"] is None else f"first {s['seconds']:g} s"
    return (f"{s['model']} / {s['codec']} / {cut}: {s['trials']} trials ({s['n_target']} target, "
            f"{s['n_nontarget']} non-target)\n"
            f"  EER                {100 * s['eer']:6.2f} %   (threshold {s['eer_threshold']:.4f})\n"
            f"  FRR @ FAR 1%       {100 * s['frr_at_far_1pct']:6.2f} %   (threshold {s['threshold_far_1pct']:.4f})\n"
            f"  FRR @ FAR 0.1%     {100 * s['frr_at_far_0.1pct']:6.2f} %   (threshold {s['threshold_far_0.1pct']:.4f})\n"
            f"  threshold for FAR {100 * s['target_far']:g}%: {s['threshold']:.4f} "
            f"(FAR {100 * s['far_at_threshold']:.2f} %, FRR {100 * s['frr_at_threshold']:.2f} %)\n"
            f"  FAR resolution {100 * s['far_resolution']:.2f} % per non-target trial")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="contact-server voice eval",
                                description="Speaker-verification accuracy through a simulated phone line.")
    p.add_argument("trials", help="trial list CSV (format of shared/voice_data/trials_dev.csv)")
    p.add_argument("--root", required=True, help="directory the file paths in the trial list are relative to")
    p.add_argument("--codec", choices=[c.value for c in Codec], default="ulaw")
    p.add_argument("--seconds", type=float, default=None, help="keep only the first S seconds of each test file")
    p.add_argument("--model", default="resemblyzer", choices=["resemblyzer", "ecapa"])
    p.add_argument("--model-dir", default=None, help="ECAPA directory (hyperparams.yaml + embedding_model.ckpt)")
    p.add_argument("--target-far", type=float, default=0.01)
    p.add_argument("--out", default="voice_eval_out", help="directory for summary JSON and DET plot")
    p.add_argument("--write-calibration", metavar="DIR", default=None,
                   help="also write/update the calibration JSON for this model and codec in DIR")
    return p


def voice_eval_main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.seconds is not None and args.seconds <= 0:
            raise VoiceAuthError("--seconds must be positive")
        if not 0 < args.target_far < 1:
            raise VoiceAuthError("--target-far must be between 0 and 1")
        kwargs = {"model_dir": args.model_dir} if args.model == "ecapa" else {}
        if args.model == "ecapa" and not args.model_dir:
            raise VoiceAuthError("--model ecapa needs --model-dir DIR")
        trials = read_trials(args.trials)
        encoder = create_encoder(args.model, **kwargs)
        result = evaluate(trials, args.root, encoder, codec=args.codec, seconds=args.seconds,
                          target_far=args.target_far)
    except VoiceAuthError as exc:
        print(f"voice eval: error: {exc}", file=sys.stderr)
        return 2
    s = result.summary()
    s["trials_file"] = str(args.trials)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cut = "full" if args.seconds is None else f"{args.seconds:g}s"
    stem = f"{result.model}_{result.codec}_{cut}"
    (out / f"{stem}.json").write_text(json.dumps(s, indent=2) + "\n", encoding="utf-8")
    plot_det([result], out / f"{stem}_det.png")
    print(_format(s))
    print(f"  wrote {out / (stem + '.json')} and {out / (stem + '_det.png')}")
    if args.write_calibration:
        p = write_calibration(CalibrationEntry(result.model, result.codec, args.seconds, args.target_far, s["threshold"],
                                               s["eer"], s["eer_threshold"], s["n_target"], s["n_nontarget"],
                                               Path(args.trials).name), args.write_calibration)
        print(f"  calibration written to {p}")
    return 0
