"""Everything heavy about one utterance, in one place, so it can run wherever the model runs.

The event loop only turns the recording into bytes (:func:`pack_audio`); decoding, resampling, VAD, the
quality checks, the fingerprint and the embedding happen in the pool's worker (thread or process) through
:func:`analyse_batch`, which batches the embeddings of every request that needs one.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from enum import Enum

import numpy as np

from .channel import alaw_decode, as_float32, pcm16_bytes, resample, ulaw_decode
from .encoders import SpeakerEncoder
from .errors import AudioError
from .quality import QualityPolicy, QualityReport, assess_quality

log = logging.getLogger(__name__)

__all__ = ["Encoding", "EmbedWhen", "AudioPayload", "AnalysisRequest", "Analysis", "pack_audio", "unpack_audio",
           "analyse_batch"]


class Encoding(str, Enum):
    PCM16 = "pcm16"  # little-endian int16
    ULAW = "ulaw"
    ALAW = "alaw"


class EmbedWhen(str, Enum):
    """Which utterances earn an embedding (the model is the expensive part)."""

    ALWAYS = "always"  # no quality check at all
    ENOUGH_SPEECH = "enough_speech"  # verification: embed unless net speech is below the policy's minimum
    QUALITY_OK = "quality_ok"  # enrollment: embed only a take without any quality issue


@dataclass(frozen=True, slots=True)
class AudioPayload:
    """Mono audio as bytes: cheap to build on the loop and to pickle to a worker process."""

    data: bytes
    rate: int
    encoding: Encoding = Encoding.PCM16


@dataclass(frozen=True, slots=True)
class AnalysisRequest:
    audio: AudioPayload
    quality: QualityPolicy | None  # None with EmbedWhen.ALWAYS
    embed_when: EmbedWhen = EmbedWhen.ALWAYS


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the worker hands back: the embedding (None when quality said no), the report and fingerprint."""

    embedding: np.ndarray | None
    report: QualityReport | None
    fingerprint: str


def pack_audio(audio: np.ndarray | bytes | AudioPayload, rate: int, encoding: Encoding = Encoding.PCM16) -> AudioPayload:
    """Loop side: float or int16 samples become PCM16 bytes (lossless for G.711-decoded audio)."""
    if isinstance(audio, AudioPayload):
        return audio
    if isinstance(audio, (bytes, bytearray, memoryview)):
        return AudioPayload(bytes(audio), int(rate), Encoding(encoding))
    a = np.asarray(audio)
    if a.dtype == np.int16 and a.ndim == 1:
        return AudioPayload(a.astype("<i2", copy=False).tobytes(), int(rate))
    return AudioPayload(pcm16_bytes(a), int(rate))


def unpack_audio(p: AudioPayload) -> np.ndarray:
    if p.rate <= 0:
        raise AudioError(f"sample rate must be positive, got {p.rate}")
    if p.encoding is Encoding.ULAW:
        return ulaw_decode(p.data)
    if p.encoding is Encoding.ALAW:
        return alaw_decode(p.data)
    if len(p.data) % 2:
        raise AudioError("PCM16 audio has an odd number of bytes; send whole 16-bit samples")
    return as_float32(np.frombuffer(p.data, dtype="<i2").astype(np.int16))


def fingerprint_of(audio: np.ndarray) -> str:
    """Exact fingerprint of the PCM16 samples: a byte-identical replay has the same one."""
    return hashlib.sha256(pcm16_bytes(audio)).hexdigest()


def _wants_embedding(req: AnalysisRequest, report: QualityReport | None) -> bool:
    if req.embed_when is EmbedWhen.ALWAYS or report is None:
        return True
    if req.embed_when is EmbedWhen.QUALITY_OK:
        return report.ok
    return report.net_speech_s >= req.quality.min_net_speech_s


def analyse_batch(encoder: SpeakerEncoder, requests: list[AnalysisRequest]) -> list[Analysis | Exception]:
    """One outcome per request, in order; a bad utterance fails alone, never its batch-mates."""
    out: list[Analysis | Exception | None] = [None] * len(requests)
    todo: list[tuple[int, np.ndarray, QualityReport | None, str]] = []
    for i, req in enumerate(requests):
        try:
            audio = unpack_audio(req.audio)
            report = None
            if req.embed_when is not EmbedWhen.ALWAYS:
                if req.quality is None:
                    raise AudioError(f"embed_when={req.embed_when.value} needs a quality policy")
                report = assess_quality(audio, req.audio.rate, req.quality)
            fp = fingerprint_of(audio)
            if _wants_embedding(req, report):
                todo.append((i, resample(audio, req.audio.rate, encoder.sample_rate), report, fp))
            else:
                out[i] = Analysis(None, report, fp)
        except Exception as exc:
            out[i] = exc
    if todo:
        try:
            embs = encoder.embed_batch([a for _, a, _, _ in todo])
        except Exception:
            embs = []
            for _, a, _, _ in todo:
                try:
                    embs.append(encoder.embed(a))
                except Exception as exc:
                    log.warning("embedding failed: %s", exc)
                    embs.append(exc)
        for (i, _, report, fp), e in zip(todo, embs):
            out[i] = e if isinstance(e, Exception) else Analysis(np.asarray(e, np.float32), report, fp)
    return out  # type: ignore[return-value]
