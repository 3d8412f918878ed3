"""Speaker encoders: audio in, L2-normalised embedding out, never a network access.

Two real models: the GE2E LSTM whose weights ship inside the ``resemblyzer`` wheel (works
offline out of the box) and SpeechBrain ECAPA-TDNN loaded from a local directory (production).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from .channel import as_float32
from .errors import AudioError, EncoderLoadError
from .vad import trim_long_silences

log = logging.getLogger(__name__)

__all__ = [
    "SpeakerEncoder",
    "ResemblyzerEncoder",
    "EcapaEncoder",
    "ECAPA_FILES",
    "l2_normalise",
    "register_encoder",
    "create_encoder",
    "encoder_names",
]


@runtime_checkable
class SpeakerEncoder(Protocol):
    """A speaker model. ``embed`` takes mono float32 at ``sample_rate``; it may block (run it in a pool)."""

    name: str
    dimension: int
    sample_rate: int

    def embed(self, audio: np.ndarray) -> np.ndarray: ...

    def embed_batch(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]: ...


def l2_normalise(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n == 0.0:
        raise AudioError("embedding has zero norm (silent or empty audio?)")
    return (v / n).astype(np.float32)


def _check_audio(audio: np.ndarray, min_samples: int) -> np.ndarray:
    a = as_float32(audio)
    if a.size < min_samples:
        raise AudioError(f"audio too short to embed: {a.size} samples, need at least {min_samples}")
    return a


def _set_torch_threads(threads: int | None) -> None:
    import torch

    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------
class ResemblyzerEncoder:
    """GE2E (3-layer LSTM, 256-d) from the weights inside the resemblyzer wheel, CPU only.

    Preprocessing follows resemblyzer's (volume normalisation, long-silence trimming, 1.6 s
    partials averaged) but is vectorised, and ``embed_batch`` runs all partials of all
    utterances in one forward pass.
    """

    name = "resemblyzer"
    dimension = 256
    sample_rate = 16000
    _PARTIAL_FRAMES = 160
    _HOP = 160  # 10 ms at 16 kHz

    def __init__(self, weights_path: str | os.PathLike | None = None, *, threads: int | None = 1,
                 partial_rate: float = 1.3, min_coverage: float = 0.75) -> None:
        _set_torch_threads(threads)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import librosa  # noqa: F401  (resemblyzer needs it for mels)
                from resemblyzer.voice_encoder import VoiceEncoder
        except ImportError as exc:  # pragma: no cover - dependency is mandatory
            raise EncoderLoadError(f"resemblyzer is not installed ({exc}); pip install resemblyzer==0.1.4") from exc
        if weights_path is None:
            import resemblyzer

            weights_path = Path(resemblyzer.__file__).resolve().parent / "pretrained.pt"
        weights_path = Path(weights_path)
        if not weights_path.is_file():
            raise EncoderLoadError(f"GE2E weights not found at {weights_path}; reinstall resemblyzer==0.1.4")
        try:
            self._model = VoiceEncoder(device="cpu", verbose=False, weights_fpath=weights_path)
        except Exception as exc:
            raise EncoderLoadError(f"could not load GE2E weights from {weights_path}: {exc}") from exc
        self._model.eval()
        import librosa

        self._mel_basis = librosa.filters.mel(sr=self.sample_rate, n_fft=400, n_mels=40).astype(np.float32)
        self._window = np.hanning(401)[:-1].astype(np.float32)  # periodic Hann, as librosa
        self._rate = partial_rate
        self._min_coverage = min_coverage
        self._lock = threading.Lock()

    def _melspectrogram(self, a: np.ndarray) -> np.ndarray:
        """Power mel spectrogram (frames x 40), numerically librosa's, without its numba warm-up."""
        padded = np.pad(a, (200, 200))
        frames = np.lib.stride_tricks.sliding_window_view(padded, 400)[:: self._HOP]
        spec = np.abs(np.fft.rfft(frames * self._window, axis=1)) ** 2
        return (spec.astype(np.float32) @ self._mel_basis.T).astype(np.float32)

    def _mel_partials(self, audio: np.ndarray) -> np.ndarray:
        from resemblyzer.audio import normalize_volume

        a = _check_audio(audio, self.sample_rate // 10)
        a = normalize_volume(a, -30, increase_only=True).astype(np.float32)
        a = trim_long_silences(a, self.sample_rate)
        _, mel_slices = self._model.compute_partial_slices(len(a), self._rate, self._min_coverage)
        need = mel_slices[-1].stop * self._HOP
        if need >= len(a):
            a = np.pad(a, (0, need - len(a) + 1))
        mel = self._melspectrogram(a)
        return np.stack([mel[s] for s in mel_slices])

    def embed(self, audio: np.ndarray) -> np.ndarray:
        return self.embed_batch([audio])[0]

    def embed_batch(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
        import torch

        if not audios:
            return []
        parts = [self._mel_partials(a) for a in audios]
        counts = [p.shape[0] for p in parts]
        with self._lock, torch.inference_mode():
            out = self._model(torch.from_numpy(np.concatenate(parts))).numpy()
        result, start = [], 0
        for c in counts:
            result.append(l2_normalise(out[start : start + c].mean(axis=0)))
            start += c
        return result


# ---------------------------------------------------------------------------------------
ECAPA_FILES = ("hyperparams.yaml", "embedding_model.ckpt")


class EcapaEncoder:
    """SpeechBrain ECAPA-TDNN from a local directory; a bad directory fails at start-up, loudly.

    The directory holds ``hyperparams.yaml`` (see ``voiceauth/ecapa_hyperparams.yaml``) and
    ``embedding_model.ckpt`` (``torch.save`` of the ECAPA_TDNN state_dict). Hub ids are refused:
    speechbrain would treat a missing path as one and try to download.
    """

    name = "ecapa"
    sample_rate = 16000

    def __init__(self, model_dir: str | os.PathLike, *, savedir: str | os.PathLike | None = None,
                 threads: int | None = 1) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.model_dir = self.check_model_dir(model_dir)
        _set_torch_threads(threads)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from speechbrain.inference.speaker import EncoderClassifier
        except Exception as exc:
            raise EncoderLoadError(
                f"speechbrain could not be imported ({exc}); install the 'ecapa' extra "
                "(speechbrain, torchaudio with its compiled .so removed, see docs)") from exc
        yaml_text = (self.model_dir / "hyperparams.yaml").read_text(encoding="utf-8")
        overrides = {"pretrained_path": str(self.model_dir)} if "pretrained_path" in yaml_text else {}
        if savedir is None:
            savedir = tempfile.mkdtemp(prefix="voiceauth-ecapa-")
        try:
            self._clf = EncoderClassifier.from_hparams(
                source=str(self.model_dir), hparams_file="hyperparams.yaml", savedir=str(savedir),
                overrides=overrides, run_opts={"device": "cpu"})
        except Exception as exc:
            raise EncoderLoadError(
                f"could not load ECAPA-TDNN from {self.model_dir}: {type(exc).__name__}: {exc}. "
                f"Expected files: {', '.join(ECAPA_FILES)}; the yaml must define embedding_model, "
                "compute_features, mean_var_norm, a classifier module and a pretrainer") from exc
        self._clf.eval()
        self._lock = threading.Lock()
        self.dimension = int(self.embed(np.zeros(self.sample_rate, dtype=np.float32) + 1e-3).shape[0])
        log.info("loaded ECAPA-TDNN (%d-d) from %s", self.dimension, self.model_dir)

    @staticmethod
    def check_model_dir(model_dir: str | os.PathLike) -> Path:
        """Resolve to an absolute existing directory holding the expected files, or raise."""
        if model_dir is None or str(model_dir).strip() == "":
            raise EncoderLoadError(f"no ECAPA model directory configured; point model_dir at a directory "
                                   f"holding {', '.join(ECAPA_FILES)}")
        d = Path(model_dir).expanduser().resolve()
        if not d.is_dir():
            raise EncoderLoadError(f"ECAPA model directory {d} does not exist or is not a directory; "
                                   f"it must hold {', '.join(ECAPA_FILES)} (model hubs are never contacted)")
        missing = [f for f in ECAPA_FILES if not (d / f).is_file()]
        if missing:
            raise EncoderLoadError(f"ECAPA model directory {d} lacks {', '.join(missing)}; expected "
                                   f"{', '.join(ECAPA_FILES)}")
        return d

    def embed(self, audio: np.ndarray) -> np.ndarray:
        return self.embed_batch([audio])[0]

    def embed_batch(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
        import torch

        if not audios:
            return []
        arrs = [_check_audio(a, self.sample_rate // 10) for a in audios]
        longest = max(a.size for a in arrs)
        wavs = torch.zeros(len(arrs), longest)
        for i, a in enumerate(arrs):
            wavs[i, : a.size] = torch.from_numpy(a)
        lens = torch.tensor([a.size / longest for a in arrs])
        with self._lock, torch.inference_mode():
            emb = self._clf.encode_batch(wavs, lens).reshape(len(arrs), -1).numpy()
        return [l2_normalise(e) for e in emb]


# ---------------------------------------------------------------------------------------
_REGISTRY: dict[str, Callable[..., SpeakerEncoder]] = {
    "resemblyzer": ResemblyzerEncoder,
    "ecapa": EcapaEncoder,
}


def register_encoder(name: str, factory: Callable[..., SpeakerEncoder]) -> None:
    _REGISTRY[name] = factory


def encoder_names() -> list[str]:
    return sorted(_REGISTRY)


def create_encoder(name: str, **kwargs) -> SpeakerEncoder:
    """Build an encoder by name (``resemblyzer``, ``ecapa`` with ``model_dir=``)."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise EncoderLoadError(f"unknown speaker model {name!r}; choose one of {encoder_names()}") from None
    return factory(**kwargs)
