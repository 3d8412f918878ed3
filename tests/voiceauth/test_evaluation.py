import csv
import json

import numpy as np
import pytest

from tests.voiceauth.conftest import ENROLL, IMPOSTORS, TEST, VOICES
from voiceauth.calibration import load_calibration, threshold_for
from voiceauth.errors import CalibrationError
from voiceauth.evaluation import eer, threshold_at_far, voice_eval_main


def test_metrics_on_known_scores():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    labels = np.array([1, 1, 0, 1, 0, 0])
    assert eer(scores, labels) == (pytest.approx(1 / 3), pytest.approx(0.7))
    thr, far, frr = threshold_at_far(scores, labels, 0.34)
    assert (thr, far, frr) == (0.6, pytest.approx(1 / 3), 0.0)
    thr, far, frr = threshold_at_far(scores, labels, 0.0)
    assert thr == 0.8 and far == 0.0 and frr == pytest.approx(1 / 3)
    separated = eer(np.array([0.9, 0.8, 0.3, 0.2]), np.array([1, 1, 0, 0]))
    assert separated[0] == 0.0


def _tiny_trials(path):
    rows = []
    for spk in ("ls-2414", "ls-367"):
        enroll = ";".join(f"{spk}/{n}.wav" for n in ENROLL[spk])
        for other, names in TEST.items():
            for n in names:
                rows.append({"model_id": spk, "enroll_speaker": spk, "enroll_files": enroll,
                             "test_file": f"{other}/{n}.wav", "test_speaker": other, "label": int(other == spk),
                             "subset": "fixtures", "same_gender": ""})
        rows.append({"model_id": spk, "enroll_speaker": spk, "enroll_files": enroll,
                     "test_file": f"ls-1624/{IMPOSTORS['ls-1624']}.wav", "test_speaker": "ls-1624", "label": 0,
                     "subset": "fixtures", "same_gender": ""})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return len(rows)


def test_eval_cli_writes_summary_plot_and_calibration(tmp_path, capsys):
    trials = tmp_path / "trials.csv"
    n = _tiny_trials(trials)
    out, cal = tmp_path / "out", tmp_path / "cal"
    rc = voice_eval_main([str(trials), "--root", str(VOICES), "--codec", "alaw", "--seconds", "3",
                          "--out", str(out), "--write-calibration", str(cal)])
    assert rc == 0
    s = json.loads((out / "resemblyzer_alaw_3s.json").read_text())
    assert s["trials"] == n and s["n_target"] == 4 and s["seconds"] == 3
    assert 0.0 <= s["eer"] <= 0.25 and s["target_score_mean"] > s["nontarget_score_mean"]
    png = (out / "resemblyzer_alaw_3s_det.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "EER" in capsys.readouterr().out
    assert threshold_for("resemblyzer", "alaw", 3, directory=cal) == pytest.approx(s["threshold"])
    assert load_calibration("resemblyzer", "alaw", cal)[0].trials == "trials.csv"


def test_eval_cli_reports_bad_input(tmp_path, capsys):
    bad = tmp_path / "t.csv"
    bad.write_text("a,b\n1,2\n")
    assert voice_eval_main([str(bad), "--root", str(tmp_path)]) == 2
    assert "expected a CSV with columns" in capsys.readouterr().err
    assert voice_eval_main([str(bad), "--root", str(tmp_path), "--model", "ecapa"]) == 2


def test_shipped_calibration_covers_full_and_3s():
    entries = load_calibration("resemblyzer", "ulaw")
    assert {e.seconds for e in entries} == {None, 3.0}
    assert all(e.target_far == 0.01 and e.n_nontarget == 222 for e in entries)
    assert threshold_for("resemblyzer", "ulaw", 3) != threshold_for("resemblyzer", "ulaw")
    with pytest.raises(CalibrationError, match="voice eval"):
        threshold_for("ecapa", "ulaw")
