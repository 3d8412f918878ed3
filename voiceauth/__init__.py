"""Voice biometrics: offline speaker encoders, enrollment, verification, encrypted voiceprint store.

Public API (see voiceauth/README.md):
    encoders     SpeakerEncoder, ResemblyzerEncoder, EcapaEncoder, create_encoder
    pool         create_pool, EncoderPool (threads), EmbeddingPool protocol
    procpool     ProcessEncoderPool (worker processes, the server default), EncoderSpec
    analysis     analyse_batch: decode, quality, fingerprint, embedding (what a worker does per request)
    quality      assess_quality, QualityPolicy, QualityReport, QualityIssue
    enrollment   EnrollmentSession, EnrollmentPolicy
    verification Verifier, VerifierPolicy, VerificationResult, Decision, Flag
    store        SqlVoiceprintStore (VoiceprintStore protocol), schema.VoiceAuthBase
    crypto       KeyRing
    service      VoiceAuthService (asyncio shell used by the IVR)
    evaluation   voice_eval_main (``contact-server voice eval``)
"""

from .calibration import threshold_for
from .channel import Codec, resample, simulate_g711
from .crypto import KeyRing, generate_key
from .encoders import EcapaEncoder, ResemblyzerEncoder, SpeakerEncoder, create_encoder
from .enrollment import EnrollmentPolicy, EnrollmentSession, TakeResult
from .errors import (AudioError, CalibrationError, ConsentRequired, EncoderLoadError, EnrollmentError, KeyringError,
                     ModelMismatch, Overloaded, VoiceAuthError, WorkerCrashed)
from .analysis import Analysis, EmbedWhen
from .pool import EmbeddingPool, EncoderPool, create_pool
from .procpool import EncoderSpec, ProcessEncoderPool
from .quality import QualityIssue, QualityPolicy, QualityReport, assess_quality
from .schema import VoiceAuthBase
from .service import VoiceAuthService
from .store import SqlVoiceprintStore, VoiceprintStore
from .verification import Decision, Flag, VerificationResult, Verifier, VerifierPolicy
from .voiceprint import Voiceprint

__all__ = [
    "threshold_for", "Codec", "resample", "simulate_g711", "KeyRing", "generate_key", "EcapaEncoder",
    "ResemblyzerEncoder", "SpeakerEncoder", "create_encoder", "EnrollmentPolicy", "EnrollmentSession", "TakeResult",
    "AudioError", "CalibrationError", "ConsentRequired", "EncoderLoadError", "EnrollmentError", "KeyringError",
    "ModelMismatch", "Overloaded", "VoiceAuthError", "WorkerCrashed", "Analysis", "EmbedWhen", "EmbeddingPool",
    "EncoderPool", "create_pool", "EncoderSpec", "ProcessEncoderPool", "QualityIssue", "QualityPolicy", "QualityReport",
    "assess_quality", "VoiceAuthBase", "VoiceAuthService", "SqlVoiceprintStore", "VoiceprintStore", "Decision", "Flag",
    "VerificationResult", "Verifier", "VerifierPolicy", "Voiceprint",
]
