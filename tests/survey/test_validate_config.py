"""``contact-server validate`` sees the survey scripts, and queues.yaml's survey offers are checked against them."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from ivr.cli import main as cli_main
from ivr.validate_all import validate_tree
from routing.config import load_routing_config_text
from tests.conftest import REPO


def config_copy(tmp_path: Path) -> Path:
    root = tmp_path / "config"
    shutil.copytree(REPO / "config", root)
    (tmp_path / "audio_fixtures").symlink_to(REPO / "audio_fixtures", target_is_directory=True)
    return root


def with_survey(root: Path, queue: str, offer: dict, services: dict | None = None) -> str:
    cfg = yaml.safe_load((root / "queues.yaml").read_text())
    cfg["queues"][queue]["survey"] = offer
    if services is not None:
        cfg["service_surveys"] = services
    text = yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)
    (root / "queues.yaml").write_text(text)
    return text


def line_of(text: str, needle: str) -> int:
    return next(i + 1 for i, line in enumerate(text.splitlines()) if needle in line)


def test_shipped_config_with_surveys_validates(tmp_path):
    root = config_copy(tmp_path)
    with_survey(root, "retail_accounts", {"script": "csat", "share": 0.25}, {"card_block": {"share": 0}})
    assert [p for p in validate_tree(root) if p.severity == "error"] == []
    assert cli_main(["validate", str(root / "surveys" / "csat.yaml")]) == 0


def test_unknown_script_in_queues_yaml_is_an_error_at_its_line(tmp_path):
    root = config_copy(tmp_path)
    text = with_survey(root, "cards", {"script": "cast", "share": 0.5},
                       {"accounts_transfers": {"script": "nps", "share": 1.0}})
    for target in (root, root / "queues.yaml"):
        errors = [p for p in validate_tree(target) if p.severity == "error"]
        assert sorted((Path(p.file).name, p.line) for p in errors) == \
            [("queues.yaml", line_of(text, "script: cast")), ("queues.yaml", line_of(text, "script: nps"))]
        assert all("unknown survey script" in p.message and "(csat)" in p.message for p in errors)
    assert cli_main(["validate", str(root)]) == 1


def test_service_survey_naming_no_ivr_service_is_a_warning_at_its_line(tmp_path):
    root = config_copy(tmp_path)
    text = with_survey(root, "cards", {"script": "csat", "share": 0.5},
                       {"card_block": {"share": 0}, "card_blok": {"share": 1.0}})
    warnings = [p for p in validate_tree(root) if "service_surveys" in p.message]
    assert [(Path(p.file).name, p.line, p.severity) for p in warnings] == \
        [("queues.yaml", line_of(text, "card_blok:"), "warning")]
    assert "'card_blok'" in warnings[0].message and "card_block" in warnings[0].message


def test_broken_survey_file_is_reported_by_validate(tmp_path):
    root = config_copy(tmp_path)
    bad = root / "surveys" / "csat.yaml"
    text = bad.read_text().replace('opt_out_digit: "9"', 'opt_out_digit: "3"')
    bad.write_text(text)
    for target in (root, bad):
        errors = [p for p in validate_tree(target) if p.severity == "error"]
        assert errors and all(Path(p.file).name == "csat.yaml" for p in errors)
        assert {p.line for p in errors} == {line_of(text, "opt_out_digit")}


def test_offer_resolution_and_shape_errors():
    base = """
skills: {general: x}
queues:
  a: {skills: {general: 1}, survey: {script: csat, share: 0.25}}
  b: {skills: {general: 1}}
  c: {skills: {general: 1}, survey: {share: 0.5}}
service_surveys:
  quiet: {share: 0}
  keen: {share: 1}
  other: {script: nps, share: 0.1}
"""
    import pytest

    from ivr.errors import ConfigError

    with pytest.raises(ConfigError) as ei:
        load_routing_config_text(base, known_strategies={"longest_idle"})
    [p] = ei.value.problems
    assert p.line == 6 and "survey needs 'script" in p.message
    cfg = load_routing_config_text(base.replace("  c: {skills: {general: 1}, survey: {share: 0.5}}\n", ""),
                                   known_strategies={"longest_idle"})
    assert cfg.survey_offer("a", None).model_dump() == {"script": "csat", "share": 0.25}
    assert cfg.survey_offer("a", "quiet") is None
    assert cfg.survey_offer("a", "keen").share == 1.0 and cfg.survey_offer("a", "keen").script == "csat"
    assert cfg.survey_offer("b", "keen") is None                    # no script anywhere
    assert cfg.survey_offer("b", "other").model_dump() == {"script": "nps", "share": 0.1}
    assert cfg.survey_offer("b", None) is None and cfg.survey_offer(None, None) is None
    with pytest.raises(ConfigError) as ei:
        load_routing_config_text(base.replace("share: 0.25", "share: 1.5"), known_strategies={"longest_idle"})
    assert any(p.line == 4 and "share" in p.message for p in ei.value.problems)
