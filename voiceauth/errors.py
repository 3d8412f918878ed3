"""One exception hierarchy for voice biometrics; every message says what to do next."""

from __future__ import annotations


class VoiceAuthError(Exception):
    """Base class of every error raised by :mod:`voiceauth`."""


class EncoderLoadError(VoiceAuthError):
    """A speaker model could not be loaded (missing directory, files or weights)."""


class AudioError(VoiceAuthError, ValueError):
    """The audio handed in is unusable (wrong shape, rate, dtype, empty)."""


class Overloaded(VoiceAuthError):
    """The embedding queue is full: answer the caller with a fallback instead of waiting."""


class ModelMismatch(VoiceAuthError):
    """Embeddings of two different models (or dimensions) were about to be compared."""


class KeyringError(VoiceAuthError):
    """An encryption key is missing, malformed, or does not decrypt a stored blob."""


class ConsentRequired(VoiceAuthError):
    """Enrollment was attempted without a recorded, unwithdrawn consent."""


class CalibrationError(VoiceAuthError):
    """No calibrated threshold exists for the requested model and codec."""


class EnrollmentError(VoiceAuthError):
    """The enrollment session was used out of order (e.g. finishing before enough takes)."""


class WorkerCrashed(VoiceAuthError):
    """The worker process handling the request died or hung; it is being replaced. Take the fallback branch."""
