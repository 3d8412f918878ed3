import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.voiceauth.conftest import ENROLL, IMPOSTORS, TEST, phone
from voiceauth.calibration import threshold_for
from voiceauth.channel import resample
from voiceauth.encoders import ECAPA_FILES, EcapaEncoder, SpeakerEncoder, create_encoder
from voiceauth.errors import AudioError, EncoderLoadError
from voiceauth.voiceprint import mean_embedding

TEMPLATE = Path(__file__).resolve().parents[2] / "voiceauth" / "ecapa_hyperparams.yaml"


def _embed(encoder, speaker, name, codec="ulaw"):
    return encoder.embed(resample(phone(speaker, name, codec), 8000, 16000))


def test_resemblyzer_is_a_normalised_speaker_encoder(encoder):
    assert isinstance(encoder, SpeakerEncoder)
    assert (encoder.name, encoder.dimension, encoder.sample_rate) == ("resemblyzer", 256, 16000)
    e = _embed(encoder, "ls-2414", "2414-128291-0003")
    assert e.shape == (256,) and e.dtype == np.float32
    assert abs(np.linalg.norm(e) - 1) < 1e-5


def test_batch_equals_single(encoder):
    a = resample(phone("ls-2414", "2414-128291-0003"), 8000, 16000)
    b = resample(phone("ls-367", "367-130732-0000"), 8000, 16000)
    ea, eb = encoder.embed_batch([a, b])
    assert np.allclose(ea, encoder.embed(a), atol=1e-5)
    assert np.allclose(eb, encoder.embed(b), atol=1e-5)


@pytest.mark.parametrize("codec", ["ulaw", "alaw"])
def test_same_speaker_accepted_others_rejected_at_calibrated_threshold(encoder, codec):
    """Calibrated for FAR 1% on the dev trials, where FRR is ~10-14%: every impostor must be
    rejected, nearly every genuine take accepted (the IVR retries), and genuine outrank impostors."""
    thr = threshold_for("resemblyzer", "ulaw", seconds=None)
    prints = {s: mean_embedding([_embed(encoder, s, n, codec) for n in names]) for s, names in ENROLL.items()}
    tests = {(s, n): _embed(encoder, s, n, codec) for s, names in TEST.items() for n in names}
    tests.update({(s, n): _embed(encoder, s, n, codec) for s, n in IMPOSTORS.items()})
    genuine, impostor = [], []
    for spk, vp in prints.items():
        own = [float(vp @ e) for (s, _), e in tests.items() if s == spk]
        others = [float(vp @ e) for (s, _), e in tests.items() if s != spk]
        assert min(own) > max(others), spk
        genuine += own
        impostor += others
    assert max(impostor) < thr
    assert sum(g >= thr for g in genuine) >= len(genuine) - 1, (genuine, thr)


def test_too_short_audio_is_an_audio_error(encoder):
    with pytest.raises(AudioError, match="too short"):
        encoder.embed(np.zeros(100, np.float32))


def test_registry(encoder):
    with pytest.raises(EncoderLoadError, match="unknown speaker model 'xvector'"):
        create_encoder("xvector")


# -- ECAPA from a local directory ---------------------------------------------------------
@pytest.fixture(scope="module")
def random_ecapa_dir(tmp_path_factory):
    import torch
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    d = tmp_path_factory.mktemp("ecapa")
    shutil.copy(TEMPLATE, d / "hyperparams.yaml")
    torch.manual_seed(1234)
    model = ECAPA_TDNN(80, channels=[1024, 1024, 1024, 1024, 3072], kernel_sizes=[5, 3, 3, 3, 1],
                       dilations=[1, 2, 3, 4, 1], attention_channels=128, lin_neurons=192)
    torch.save(model.state_dict(), d / "embedding_model.ckpt")
    return d, model.eval()


def test_ecapa_loads_random_model_bit_identical(random_ecapa_dir, tmp_path, monkeypatch):
    import torch
    from speechbrain.lobes.features import Fbank
    from speechbrain.processing.features import InputNormalization

    d, model = random_ecapa_dir
    monkeypatch.chdir(tmp_path)  # anything written to cwd would land here, not in the repo
    enc = create_encoder("ecapa", model_dir=d, savedir=tmp_path / "save")
    assert isinstance(enc, EcapaEncoder) and enc.dimension == 192 and enc.sample_rate == 16000
    loaded = enc._clf.mods.embedding_model.state_dict()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.items())
    audio = resample(phone("ls-367", "367-130732-0000"), 8000, 16000)
    got = enc.embed(audio)
    with torch.inference_mode():
        wav = torch.from_numpy(audio)[None]
        feats = Fbank(n_mels=80)(wav)
        feats = InputNormalization(norm_type="sentence", std_norm=False)(feats, torch.ones(1))
        ref = model(feats, torch.ones(1)).reshape(-1).numpy()
    assert np.allclose(got, ref / np.linalg.norm(ref), atol=1e-4)
    assert list(tmp_path.iterdir()) == [tmp_path / "save"]


def test_ecapa_missing_dir_is_a_clear_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(EncoderLoadError) as exc:
        EcapaEncoder(missing)
    assert str(missing) in str(exc.value) and "hyperparams.yaml" in str(exc.value)


def test_ecapa_dir_without_checkpoint_names_the_missing_file(tmp_path):
    shutil.copy(TEMPLATE, tmp_path / "hyperparams.yaml")
    with pytest.raises(EncoderLoadError, match="lacks embedding_model.ckpt"):
        EcapaEncoder(tmp_path)
    assert ECAPA_FILES == ("hyperparams.yaml", "embedding_model.ckpt")


def test_ecapa_hub_id_is_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EncoderLoadError, match="does not exist"):
        EcapaEncoder("speechbrain/spkrec-ecapa-voxceleb")
