"""Prompt audio: recorded WAVs as they are, text rendered once with espeak-ng and cached by content hash.

Output is always 8 kHz 16-bit mono PCM WAV, what the G.711 media path plays. The cache key hashes the final text
(templates filled), the voice, the sample rate, the speed and a format version, so each distinct utterance is
synthesised once and a change of voice or speed never plays a stale file. Writes are atomic (temp file +
``os.replace``) so concurrent renders of the same prompt are harmless.

Bundled prompts (``audio_fixtures/prompts/``) are a read-only second cache with the same names, so the demo works
on machines without espeak-ng; a templated prompt ("Buongiorno {customer.first_name}") then falls back to its
fixed part ("Buongiorno"), which the bundle contains.

``python -m ivr.prompts config/ivr --out audio_fixtures/prompts`` renders every prompt of a configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import logging
import os
import subprocess
import tempfile
import wave
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from ivr.errors import IvrError
from ivr.flow.actions import PromptRef
from ivr.flow.context import TEMPLATE_RE, fill_template, strip_placeholders

log = logging.getLogger(__name__)

FORMAT_VERSION = "2"   # bump when the rendering pipeline changes: old cache files are then never used
DEFAULT_VOICES = {"it": "it", "en": "en"}


class PromptError(IvrError):
    """A prompt cannot be produced; the message names the file or text and what to install or fix."""


class TtsUnavailable(PromptError):
    pass


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """16-bit PCM WAV -> (mono int16 samples, rate). espeak's streamed headers carry a bogus length: ignored."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                raise PromptError(f"{path}: only 16-bit PCM WAV is supported; convert it with "
                                  "sox in.wav -b 16 out.wav")
            ch, rate = w.getnchannels(), w.getframerate()
            data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    except (wave.Error, EOFError) as exc:
        raise PromptError(f"{path}: not a PCM WAV file ({exc})") from None
    if ch > 1:
        data = data[: len(data) - len(data) % ch].reshape(-1, ch).mean(axis=1).astype(np.int16)
    return data, rate


def load_pcm(path: str | Path) -> np.ndarray:
    """Samples of a rendered prompt (8 kHz int16), for the media layer's ``play``."""
    data, rate = read_wav(path)
    if rate != 8000:
        raise PromptError(f"{path}: {rate} Hz; render it through PromptRenderer to get 8 kHz")
    return data


def _write_wav_atomic(path: Path, pcm: np.ndarray, rate: int) -> None:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".wav", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _to_rate(pcm: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return pcm
    y = soxr.resample(pcm.astype(np.float32) / 32768.0, rate, target, quality="HQ")
    return np.clip(np.round(y * 32768.0), -32768, 32767).astype(np.int16)


def _trim_silence(pcm: np.ndarray, rate: int, keep_s: float = 0.1) -> np.ndarray:
    """espeak pads its output; trimming keeps prompts snappy and the bundle small."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 300)
    if loud.size == 0:
        return pcm
    pad = int(keep_s * rate)
    return pcm[max(0, loud[0] - pad): loud[-1] + pad]


def _shorten_pauses(pcm: np.ndarray, rate: int, max_pause_s: float = 0.25) -> np.ndarray:
    """Cap espeak's long pauses at commas/full stops: callers wait less, bundled prompts stay small."""
    frame = rate // 100
    n = len(pcm) // frame
    if n == 0:
        return pcm
    rms = np.sqrt(np.mean(pcm[: n * frame].astype(np.float64).reshape(n, frame) ** 2, axis=1))
    quiet = np.concatenate([[False], rms < 200, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    starts, ends = edges[::2], edges[1::2]
    keep_frames = int(max_pause_s * 100)
    keep = np.ones(len(pcm), dtype=bool)
    for a, b in zip(starts, ends):
        if b - a > keep_frames:
            cut_from = (a + keep_frames // 2) * frame
            cut_to = (b - keep_frames // 2) * frame
            keep[cut_from:cut_to] = False
    return pcm[keep]


class PromptRenderer:
    def __init__(self, cache_dir: str | Path, espeak_binary: str = "espeak-ng", *,
                 bundled_dirs: Iterable[str | Path] = (), sample_rate: int = 8000, speed: int = 175,
                 voices: Mapping[str, str] | None = None):
        self.cache_dir = Path(cache_dir)
        self.espeak = espeak_binary
        self.bundled_dirs = [Path(p) for p in bundled_dirs]
        self.rate = sample_rate
        self.speed = speed
        self.voices = dict(voices or DEFAULT_VOICES)
        self.synthesised = 0            # espeak runs by this renderer: lets tests and metrics see cache misses
        self._inflight: dict[str, asyncio.Future] = {}

    # ------------------------------------------------ keys and lookups

    def voice_for(self, language: str) -> str:
        return self.voices.get(language, self.voices.get(language.split("-")[0], language))

    def key(self, text: str, language: str) -> str:
        h = hashlib.sha256("\0".join([FORMAT_VERSION, self.voice_for(language), str(self.rate), str(self.speed),
                                      text]).encode())
        return h.hexdigest()[:32]

    def _find(self, name: str) -> Path | None:
        for d in (self.cache_dir, *self.bundled_dirs):
            p = d / name
            if p.is_file():
                return p
        return None

    def final_text(self, ref: PromptRef, variables: Mapping[str, Any] | None = None) -> str | None:
        if variables is not None and ref.template and TEMPLATE_RE.search(ref.template):
            return fill_template(ref.template, variables)
        if variables is not None and ref.text and TEMPLATE_RE.search(ref.text):
            return fill_template(ref.text, variables)
        return ref.text

    # ------------------------------------------------ sync API

    def render(self, ref: PromptRef, variables: Mapping[str, Any] | None = None) -> Path:
        """Path of an 8 kHz mono WAV for the prompt; synthesises (blocking) on a cache miss."""
        if ref.wav:
            return self._wav(ref.wav)
        text = self.final_text(ref, variables)
        if not text:
            raise PromptError("prompt has neither text nor wav")
        name = self.key(text, ref.language) + ".wav"
        hit = self._find(name)
        if hit is not None:
            return hit
        try:
            raw = self._run_espeak(text, ref.language)
        except TtsUnavailable:
            fallback = self._bundled_fallback(ref)
            if fallback is None:
                raise
            return fallback
        return self._store(name, raw)

    def render_text(self, text: str, language: str) -> Path:
        return self.render(PromptRef(text=text, wav=None, language=language))

    def _wav(self, wav: str) -> Path:
        p = Path(wav)
        if not p.is_file():
            raise PromptError(f"prompt file {wav} does not exist: record it or fix the path in the IVR YAML")
        pcm, rate = read_wav(p)
        with wave.open(str(p), "rb") as w:
            if rate == self.rate and w.getnchannels() == 1:
                return p
        name = "wav-" + hashlib.sha256(p.read_bytes()).hexdigest()[:32] + f"-{self.rate}.wav"
        hit = self._find(name)
        return hit if hit is not None else self._store_pcm(name, _to_rate(pcm, rate, self.rate))

    def _bundled_fallback(self, ref: PromptRef) -> Path | None:
        if not ref.template:
            return None
        fixed = strip_placeholders(ref.template)
        hit = self._find(self.key(fixed, ref.language) + ".wav") if fixed else None
        if hit is not None:
            log.warning("espeak-ng unavailable: playing %r instead of the personalised prompt", fixed)
        return hit

    def _cmd(self, language: str, out: str) -> list[str]:
        return [self.espeak, "-v", self.voice_for(language), "-s", str(self.speed), "-w", out, "--stdin"]

    def _run_espeak(self, text: str, language: str) -> tuple[np.ndarray, int]:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache_dir) as tmp:
            out = os.path.join(tmp, "tts.wav")
            try:
                proc = subprocess.run(self._cmd(language, out), input=text.encode(), capture_output=True,
                                      timeout=60)
            except FileNotFoundError:
                raise TtsUnavailable(f"{self.espeak} not found: install espeak-ng (apt install espeak-ng) or "
                                     "record the prompt as a WAV") from None
            if proc.returncode != 0 or not os.path.exists(out):
                raise PromptError(f"espeak-ng failed ({proc.returncode}) for {text[:40]!r}: "
                                  f"{proc.stderr.decode(errors='replace').strip()}")
            self.synthesised += 1
            return read_wav(out)

    def _store(self, name: str, raw: tuple[np.ndarray, int]) -> Path:
        pcm, rate = raw
        pcm = _trim_silence(_to_rate(pcm, rate, self.rate), self.rate)
        return self._store_pcm(name, _shorten_pauses(pcm, self.rate))

    def _store_pcm(self, name: str, pcm: np.ndarray) -> Path:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        path = self.cache_dir / name
        _write_wav_atomic(path, pcm, self.rate)
        return path

    # ------------------------------------------------ async API

    async def render_async(self, ref: PromptRef, variables: Mapping[str, Any] | None = None) -> Path:
        """Like :meth:`render` without blocking the loop: espeak via create_subprocess_exec, resampling and file
        writes in a thread; concurrent requests for the same prompt share one synthesis."""
        if ref.wav:
            return await asyncio.to_thread(self._wav, ref.wav)
        text = self.final_text(ref, variables)
        if not text:
            raise PromptError("prompt has neither text nor wav")
        name = self.key(text, ref.language) + ".wav"
        hit = self._find(name)
        if hit is not None:
            return hit
        pending = self._inflight.get(name)
        if pending is not None:
            return await asyncio.shield(pending)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[name] = fut
        try:
            try:
                raw = await self._run_espeak_async(text, ref.language)
                path = await asyncio.to_thread(self._store, name, raw)
            except TtsUnavailable:
                path = self._bundled_fallback(ref)
                if path is None:
                    raise
            fut.set_result(path)
            return path
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters re-raise it, nobody else must log it
            raise
        finally:
            self._inflight.pop(name, None)

    async def _run_espeak_async(self, text: str, language: str) -> tuple[np.ndarray, int]:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = await asyncio.to_thread(tempfile.mkdtemp, dir=self.cache_dir)
        out = os.path.join(tmp, "tts.wav")
        try:
            try:
                proc = await asyncio.create_subprocess_exec(*self._cmd(language, out), stdin=subprocess.PIPE,
                                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            except FileNotFoundError:
                raise TtsUnavailable(f"{self.espeak} not found: install espeak-ng (apt install espeak-ng) or "
                                     "record the prompt as a WAV") from None
            try:
                _, err = await asyncio.wait_for(proc.communicate(text.encode()), 60)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
                raise PromptError(f"espeak-ng timed out for {text[:40]!r}") from None
            if proc.returncode != 0 or not os.path.exists(out):
                raise PromptError(f"espeak-ng failed ({proc.returncode}) for {text[:40]!r}: "
                                  f"{err.decode(errors='replace').strip()}")
            self.synthesised += 1
            return await asyncio.to_thread(read_wav, out)
        finally:
            await asyncio.to_thread(_rmtree, tmp)


def _rmtree(path: str) -> None:
    import shutil
    shutil.rmtree(path, ignore_errors=True)


class PromptPcmSource:
    """What the call layer plays: ``await render_async(ref) -> int16 PCM at 8 kHz``, with the decoded samples of
    recent prompts kept in memory (menus are played thousands of times a day). A prompt that cannot be produced
    is logged and plays as nothing, so a missing file or TTS never drops the call; ``validate`` catches those
    before going live."""

    def __init__(self, renderer: PromptRenderer, max_cached: int = 512):
        from collections import OrderedDict

        self.renderer = renderer
        self.max_cached = max_cached
        self._pcm: "OrderedDict[Path, np.ndarray]" = OrderedDict()

    async def render_async(self, prompt: PromptRef, variables: Mapping[str, Any] | None = None) -> np.ndarray:
        try:
            path = await self.renderer.render_async(prompt, variables)
            pcm = self._pcm.get(path)
            if pcm is None:
                pcm = await asyncio.to_thread(load_pcm, path)
                self._pcm[path] = pcm
                if len(self._pcm) > self.max_cached:
                    self._pcm.popitem(last=False)
            else:
                self._pcm.move_to_end(path)
            return pcm
        except PromptError as exc:
            log.error("prompt not playable, skipped: %s", exc)
            return np.zeros(0, dtype=np.int16)


# ---------------------------------------------------------------- bundling

def config_prompt_texts(config: Any) -> list[tuple[str, str]]:
    """(text, language) of every TTS prompt in a configuration, templates reduced to their fixed part."""
    from ivr.flow.validate import node_prompts

    langs = list(config.settings.languages)
    out: dict[tuple[str, str], None] = {}
    for fd in config.flows.values():
        for node in fd.flow.nodes.values():
            for _, prompt in node_prompts(node):
                for lang, variant in prompt.variants.items():
                    if not variant.text or variant.wav:
                        continue
                    text = strip_placeholders(variant.text) if TEMPLATE_RE.search(variant.text) else variant.text
                    for language in (langs if lang == "*" else [lang]):
                        out[(text, language)] = None
    return list(out)


def bundle(config: Any, out_dir: str | Path, espeak_binary: str = "espeak-ng") -> list[Path]:
    """Render every prompt of ``config`` into ``out_dir`` (names = cache keys) plus an index.json for humans."""
    renderer = PromptRenderer(out_dir, espeak_binary)
    index = {}
    paths = []
    for text, lang in config_prompt_texts(config):
        p = renderer.render_text(text, lang)
        index[p.name] = {"language": lang, "text": text}
        paths.append(p)
    (Path(out_dir) / "index.json").write_text(json.dumps(dict(sorted(index.items())), ensure_ascii=False,
                                                         indent=1) + "\n", encoding="utf-8")
    return paths


def main(argv: list[str] | None = None) -> int:
    from ivr.flow.validate import load_ivr_config

    ap = argparse.ArgumentParser(description="Render the TTS prompts of an IVR configuration to 8 kHz WAVs")
    ap.add_argument("config", help="IVR configuration directory (e.g. config/ivr)")
    ap.add_argument("--out", default="audio_fixtures/prompts")
    ap.add_argument("--espeak", default="espeak-ng")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    paths = bundle(load_ivr_config(args.config), args.out, args.espeak)
    total = sum(p.stat().st_size for p in paths)
    log.info("%d prompts, %.1f kB in %s", len(paths), total / 1024, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
