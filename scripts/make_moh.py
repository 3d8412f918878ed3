"""Synthesise the bundled music on hold (audio_fixtures/moh/gentle_tones.wav): a slow pentatonic tune of soft
sine notes with a fifth below, 8 kHz mono 16-bit, 16 s, made from nothing but this script (no third-party audio).

Run: .venv/bin/python scripts/make_moh.py
"""

from pathlib import Path

import numpy as np

from ivr.media.audio import write_wav

RATE = 8000
NOTE_S = 0.5
# C major pentatonic, A4 = 440 Hz; a gentle up-and-down phrase, four bars of eight notes
FREQS = {"C": 261.63, "D": 293.66, "E": 329.63, "G": 392.00, "A": 440.00, "c": 523.25}
TUNE = "CEGA GEDC DEGc AGED EGAc AGEG CDEG EDCC".split()


def note(freq: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    wave = np.sin(2 * np.pi * freq * t) + 0.35 * np.sin(2 * np.pi * freq * 0.5 * t) \
        + 0.12 * np.sin(2 * np.pi * freq * 2 * t)
    attack = np.minimum(1.0, t / 0.04)
    decay = np.exp(-3.0 * t / seconds)
    return wave * attack * decay


def main() -> None:
    parts = [note(FREQS[n], NOTE_S) for bar in TUNE for n in bar]
    audio = np.concatenate(parts)
    audio *= 0.18 * 32767 / np.max(np.abs(audio))       # about -15 dBFS peak: soft under prompts
    fade = np.minimum(1.0, np.arange(len(audio))[::-1] / (0.3 * RATE))
    out = Path(__file__).resolve().parents[1] / "audio_fixtures" / "moh" / "gentle_tones.wav"
    write_wav(out, (audio * fade).astype(np.int16))
    print(out, len(audio) / RATE, "s")


if __name__ == "__main__":
    main()
