"""Survey scripts: the bundled csat script loads as the contract describes, and every kind of mistake is reported
at its line with a message that says what to change."""

from __future__ import annotations

import textwrap
import wave
from pathlib import Path

import pytest

from ivr.errors import ConfigError
from ivr.survey.script import QuestionKind, SurveyScript, load_survey_script, load_survey_scripts
from tests.conftest import REPO

GOOD = """\
name: t
title: Test
languages: [it, en]
csat_question: q1
intro: {it: "Buongiorno", en: "Hello"}
questions:
  - id: q1
    kind: scale
    scale: {min: 1, max: 5}
    text: {it: "Voto", en: "Rating"}
  - id: q2
    kind: yes_no
    text: {it: "Risolto?", en: "Solved?"}
  - id: q3
    kind: choice
    options:
      "1": {value: speed, label: "Velocità"}
      "2": {value: courtesy, label: "Cortesia"}
    text: {it: "Cosa?", en: "What?"}
opt_out_digit: "9"
closing: {it: "Grazie", en: "Thanks"}
"""


def write(tmp_path: Path, text: str, name: str = "t.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def problems(tmp_path: Path, text: str) -> list[tuple[int, str]]:
    with pytest.raises(ConfigError) as ei:
        load_survey_script(write(tmp_path, text))
    return [(p.line, p.message) for p in ei.value.problems]


def line_of(text: str, needle: str, nth: int = 0) -> int:
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    return hits[nth]


def test_bundled_csat_script_matches_the_contract():
    scripts = load_survey_scripts(REPO / "config" / "surveys")
    s = scripts["csat"]
    assert isinstance(s, SurveyScript)
    assert s.languages == ("it", "en") and s.csat_question == "q1" and s.opt_out_digit == "9"
    assert [q.kind for q in s.questions] == [QuestionKind.SCALE, QuestionKind.YES_NO, QuestionKind.CHOICE]
    assert s.csat_scale() == (1, 5)
    assert list(s.question("q1").options) == ["1", "2", "3", "4", "5"]
    assert s.question("q1").options["4"].value == 4
    assert {d: o.value for d, o in s.question("q2").options.items()} == {"1": True, "2": False}
    assert s.question("q3").options["2"].value == "courtesy" and s.question("q3").options["2"].label == "Cortesia"
    for lang in ("it", "en"):
        assert s.intro.ref(lang).text and s.closing.ref(lang).language == lang
        for q in s.questions:
            assert q.text.ref(lang).text
    assert s.source.endswith("csat.yaml")


def test_good_script_and_name_defaults(tmp_path):
    s = load_survey_script(write(tmp_path, GOOD.replace("name: t\n", ""), "after_call.yaml"))
    assert s.name == "after_call" and s.title == "Test"
    assert s.question("q3").options["1"].value == "speed"
    with pytest.raises(KeyError):
        s.question("nope")
    assert s.language("en") == "en" and s.language("de") == "it" and s.language("en-GB") == "en"


def test_unknown_key_at_its_line(tmp_path):
    text = GOOD.replace("  - id: q2\n", "  - id: q2\n    retrys: 3\n")
    [(line, msg)] = problems(tmp_path, text)
    assert line == line_of(text, "retrys") and "unknown key 'retrys'" in msg and "spelling" in msg


def test_unknown_top_level_key(tmp_path):
    text = GOOD + "closng: {it: x, en: y}\n"
    [(line, msg)] = problems(tmp_path, text)
    assert line == line_of(text, "closng") and "unknown key 'closng'" in msg


def test_bad_option_digit(tmp_path):
    text = GOOD.replace('"2": {value: courtesy', '"12": {value: courtesy')
    [(line, msg)] = problems(tmp_path, text)
    assert line == line_of(text, '"12"') and "not a keypad digit" in msg


def test_scale_outside_the_keypad_and_reversed(tmp_path):
    text = GOOD.replace("scale: {min: 1, max: 5}", "scale: {min: 1, max: 10}")
    [(line, msg)] = problems(tmp_path, text)
    assert line == line_of(text, "max: 10") and "does not fit the keypad" in msg
    text = GOOD.replace("scale: {min: 1, max: 5}", "scale: {min: 5, max: 1}")
    [(line, msg)] = problems(tmp_path, text)
    assert line == line_of(text, "min: 5") and "must be below max" in msg


def test_duplicate_question_id(tmp_path):
    text = GOOD.replace("  - id: q2\n", "  - id: q1\n")
    [(line, msg)] = problems(tmp_path, text)
    assert line == line_of(text, "- id: q1", 1) and "duplicate question id 'q1'" in msg and "#1" in msg


def test_csat_question_must_be_a_scale(tmp_path):
    text = GOOD.replace("csat_question: q1", "csat_question: q2")
    [(line, msg)] = problems(tmp_path, text)
    assert line == line_of(text, "csat_question") and "is a yes_no question" in msg and "scale" in msg
    text = GOOD.replace("csat_question: q1", "csat_question: q7")
    [(line, msg)] = problems(tmp_path, text)
    assert line == line_of(text, "csat_question") and "not a question of this survey" in msg


def test_opt_out_digit_clashes_with_an_answer(tmp_path):
    text = GOOD.replace('opt_out_digit: "9"', 'opt_out_digit: "2"')
    found = problems(tmp_path, text)
    assert [line for line, _ in found] == [line_of(text, "opt_out_digit")] * 3
    assert all("also an answer" in m for _, m in found)
    assert {m.split("question ")[1].split(" ")[0] for _, m in found} == {"'q1'", "'q2'", "'q3'"}


def test_opt_out_digit_not_a_key(tmp_path):
    text = GOOD.replace('opt_out_digit: "9"', 'opt_out_digit: "99"')
    [(line, msg)] = problems(tmp_path, text)
    assert line == line_of(text, "opt_out_digit") and "single keypad key" in msg


def test_prompt_missing_a_declared_language(tmp_path):
    text = GOOD.replace('text: {it: "Risolto?", en: "Solved?"}', 'text: {it: "Risolto?"}')
    [(line, msg)] = problems(tmp_path, text)
    assert line == line_of(text, "Risolto?") and "no text for 'en'" in msg and "q2" in msg


def test_prompt_in_an_undeclared_language(tmp_path):
    text = GOOD.replace('closing: {it: "Grazie", en: "Thanks"}', 'closing: {it: "Grazie", en: "Thanks", de: "Danke"}')
    [(line, msg)] = problems(tmp_path, text)
    assert line == line_of(text, "Danke") and "'de' is not in 'languages'" in msg


def test_language_without_built_in_prompts_needs_its_own(tmp_path):
    text = GOOD.replace("languages: [it, en]", "languages: [it, de]").replace("en:", "de:")
    found = problems(tmp_path, text)
    msgs = " | ".join(m for _, m in found)
    assert "invalid_prompt" in msgs and "no_input_prompt" in msgs and "opt_out_prompt" in msgs
    fixed = text + ('invalid_prompt: {it: "No", de: "Nein"}\nno_input_prompt: {it: "?", de: "?"}\n'
                    'opt_out_prompt: {it: "Ciao", de: "Tschüss"}\n')
    s = load_survey_script(write(tmp_path, fixed))
    assert s.invalid_prompt.ref("de").text == "Nein"


def test_kind_and_shape_mistakes(tmp_path):
    text = GOOD.replace("kind: yes_no", "kind: stars")
    [(line, msg)] = problems(tmp_path, text)
    assert line == line_of(text, "kind: stars") and "kind" in msg and "'scale'" in msg
    text = GOOD.replace("    kind: choice\n", "    kind: scale\n")
    found = problems(tmp_path, text)
    assert (line_of(text, "options:"), ) == tuple({line for line, m in found if "remove 'options'" in m})
    text = GOOD.replace("    scale: {min: 1, max: 5}\n", "")
    [(line, msg)] = problems(tmp_path, text)
    assert line == line_of(text, "- id: q1") and "needs 'scale" in msg


def test_missing_required_keys(tmp_path):
    text = GOOD.replace('closing: {it: "Grazie", en: "Thanks"}\n', "")
    [(line, msg)] = problems(tmp_path, text)
    assert "missing required key 'closing'" in msg
    text = GOOD.split("questions:")[0] + 'closing: {it: "Grazie", en: "Thanks"}\n'
    [(line, msg)] = problems(tmp_path, text)
    assert "missing required key 'questions'" in msg


def test_missing_wav_prompt(tmp_path):
    text = GOOD.replace('intro: {it: "Buongiorno", en: "Hello"}', "intro: {it: {wav: ciao.wav}, en: Hello}")
    [(line, msg)] = problems(tmp_path, text)
    assert line == line_of(text, "ciao.wav") and "does not exist" in msg
    with wave.open(str(tmp_path / "ciao.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)
    s = load_survey_script(write(tmp_path, text))
    assert s.intro.ref("it").wav == str(tmp_path / "ciao.wav")


def test_yaml_syntax_error_has_a_line(tmp_path):
    text = GOOD.replace("  - id: q2\n", "  - id: q2\n   kind: [\n")
    found = problems(tmp_path, text)
    assert found and "YAML syntax error" in found[0][1]


def test_directory_reports_every_file_and_duplicate_names(tmp_path):
    write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, GOOD, "b.yaml")                       # same name: t
    write(tmp_path, GOOD.replace("csat_question: q1", "csat_question: q2"), "c.yaml")
    with pytest.raises(ConfigError) as ei:
        load_survey_scripts(tmp_path)
    files = sorted(Path(p.file).name for p in ei.value.problems)
    assert files == ["b.yaml", "c.yaml"]
    assert any("already used" in p.message for p in ei.value.problems)
    assert load_survey_scripts(tmp_path / "none") == {}
