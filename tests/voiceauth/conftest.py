"""Shared fixtures: one GE2E encoder per session and the fixture voices put through G.711."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import FIXTURES
from voiceauth.channel import simulate_g711
from voiceauth.crypto import KeyRing, generate_key
from voiceauth.evaluation import load_wav
from voiceauth.store import SqlVoiceprintStore

VOICES = FIXTURES / "voices"
ENROLL = {
    "ls-2414": ["2414-128291-0000", "2414-128291-0001", "2414-128291-0007"],
    "ls-3005": ["3005-163389-0001", "3005-163389-0002", "3005-163389-0005"],
    "ls-367": ["367-130732-0001", "367-130732-0004", "367-130732-0008"],
}
TEST = {
    "ls-2414": ["2414-128291-0003", "2414-128291-0006"],
    "ls-3005": ["3005-163389-0004", "3005-163389-0008"],
    "ls-367": ["367-130732-0000", "367-130732-0009"],
}
IMPOSTORS = {"ls-1624": "1624-142933-0000", "ls-1455": "1455-134435-0000"}


def phone(speaker: str, name: str, codec: str = "ulaw") -> np.ndarray:
    """A fixture recording as it arrives over a G.711 call: float32 at 8 kHz."""
    audio, rate = load_wav(VOICES / speaker / f"{name}.wav")
    return simulate_g711(audio, rate, codec)


@pytest.fixture(scope="session")
def encoder():
    from voiceauth.encoders import ResemblyzerEncoder

    return ResemblyzerEncoder()


@pytest.fixture
def keyring() -> KeyRing:
    return KeyRing.from_base64(generate_key())


@pytest.fixture
def store(keyring) -> SqlVoiceprintStore:
    return SqlVoiceprintStore("sqlite://", keyring)
