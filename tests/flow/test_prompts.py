"""Prompt rendering: real espeak-ng once, cache hits after, bundled fallback, WAV pass-through/resampling."""

import asyncio
import shutil
import wave

import numpy as np
import pytest

from ivr.flow import PromptRef
from ivr.prompts import PromptError, PromptRenderer, TtsUnavailable, config_prompt_texts, load_pcm
from tests.flow.helpers import DEMO_DIR, demo_config

BUNDLE = DEMO_DIR.parent.parent / "audio_fixtures" / "prompts"
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


def _params(path):
    with wave.open(str(path), "rb") as w:
        return w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()


@needs_espeak
def test_espeak_renders_once_then_cache(tmp_path):
    r = PromptRenderer(tmp_path)
    ref = PromptRef(text="Benvenuto nella prova della cache.", wav=None, language="it")
    p1 = r.render(ref)
    assert r.synthesised == 1
    rate, ch, width, frames = _params(p1)
    assert (rate, ch, width) == (8000, 1, 2) and frames > 4000          # > 0.5 s of speech
    assert np.abs(load_pcm(p1).astype(np.int32)).max() > 1000          # not silence
    st = p1.stat()
    p2 = PromptRenderer(tmp_path).render(ref)                           # a fresh renderer: disk cache
    assert p2 == p1 and p2.stat().st_ino == st.st_ino and p2.stat().st_mtime_ns == st.st_mtime_ns
    again = PromptRenderer(tmp_path)
    again.render(ref)
    assert again.synthesised == 0
    assert r.key(ref.text, "it") != r.key(ref.text, "en")              # voice is part of the key
    assert PromptRenderer(tmp_path, speed=140).key(ref.text, "it") != r.key(ref.text, "it")


@needs_espeak
async def test_async_render_shares_one_synthesis_and_fills_templates(tmp_path):
    r = PromptRenderer(tmp_path)
    ref = PromptRef(text=None, wav=None, language="en", template="Hello {customer.first_name}.")
    scope = {"customer": {"first_name": "Anna"}}
    p1, p2 = await asyncio.gather(r.render_async(ref, scope), r.render_async(ref, scope))
    assert p1 == p2 and r.synthesised == 1
    assert p1.name == r.key("Hello Anna.", "en") + ".wav"               # only the final text is hashed
    assert r.render(PromptRef(text="Hello Anna.", wav=None, language="en")) == p1
    assert r.synthesised == 1


def test_without_espeak_uses_bundle_and_template_fallback(tmp_path):
    r = PromptRenderer(tmp_path, espeak_binary=str(tmp_path / "no-espeak"), bundled_dirs=[BUNDLE])
    p = r.render(PromptRef(text="Benvenuto in Banca Aurora.", wav=None, language="it"))
    assert p.parent == BUNDLE and _params(p)[0] == 8000
    greet = r.render(PromptRef(text="Buongiorno Mario.", wav=None, language="it",
                               template="Buongiorno {customer.first_name}."))
    assert greet.name == r.key("Buongiorno.", "it") + ".wav"
    with pytest.raises(TtsUnavailable, match="install espeak-ng"):
        r.render(PromptRef(text="Testo che non esiste nel pacchetto.", wav=None, language="it"))


def test_bundle_covers_every_demo_prompt():
    r = PromptRenderer(BUNDLE)
    missing = [(t, lang) for t, lang in config_prompt_texts(demo_config())
               if not (BUNDLE / (r.key(t, lang) + ".wav")).is_file()]
    assert missing == [], "re-run: python -m ivr.prompts config/ivr --out audio_fixtures/prompts"
    total = sum(p.stat().st_size for p in BUNDLE.glob("*.wav"))
    assert total < 2.5 * 1024 * 1024


def test_wav_passthrough_and_resample(tmp_path):
    r = PromptRenderer(tmp_path / "cache")
    beep = BUNDLE / "beep.wav"
    assert r.render(PromptRef(text=None, wav=str(beep), language="it")) == beep
    hi = tmp_path / "hi.wav"
    t = np.arange(16000) / 16000
    with wave.open(str(hi), "wb") as w:
        w.setnchannels(2), w.setsampwidth(2), w.setframerate(16000)
        stereo = np.repeat((np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2")[:, None], 2, axis=1)
        w.writeframes(stereo.tobytes())
    out = r.render(PromptRef(text=None, wav=str(hi), language="it"))
    rate, ch, _, frames = _params(out)
    assert (rate, ch) == (8000, 1) and abs(frames - 8000) < 10
    with pytest.raises(PromptError, match="does not exist"):
        r.render(PromptRef(text=None, wav=str(tmp_path / "nope.wav"), language="it"))


async def test_pcm_source_for_the_call_layer(tmp_path):
    from ivr.prompts import PromptPcmSource

    src = PromptPcmSource(PromptRenderer(tmp_path, espeak_binary=str(tmp_path / "none"), bundled_dirs=[BUNDLE]))
    pcm = await src.render_async(PromptRef(text="Benvenuto in Banca Aurora.", wav=None, language="it"))
    assert pcm.dtype == np.int16 and len(pcm) > 4000
    assert (await src.render_async(PromptRef(text="Benvenuto in Banca Aurora.", wav=None, language="it"))) is pcm
    silent = await src.render_async(PromptRef(text="Mai registrato.", wav=None, language="it"))
    assert len(silent) == 0                                    # logged, the call goes on
