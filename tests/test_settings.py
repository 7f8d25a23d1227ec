from pathlib import Path

import pytest

from imagekit.errors import InputError
from imagekit.settings import load_settings


def test_precedence_option_over_env_over_file(tmp_path: Path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('marketplace = "http://file"\naccel = "tcg"\n')
    env = {"IMAGEKIT_MARKETPLACE": "http://env"}
    s = load_settings({}, env=env, path=cfg)
    assert s.marketplace == "http://env"
    assert s.accel == "tcg"
    s = load_settings({"marketplace": "http://opt"}, env=env, path=cfg)
    assert s.marketplace == "http://opt"


def test_unknown_setting_in_file_is_named(tmp_path: Path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('markteplace = "x"\n')
    with pytest.raises(InputError, match="unknown setting 'markteplace'"):
        load_settings({}, env={}, path=cfg)


def test_bad_accel_refused(tmp_path: Path):
    with pytest.raises(InputError, match="accel"):
        load_settings({}, env={"IMAGEKIT_ACCEL": "hvf"}, path=tmp_path / "none.toml")


def test_cli_reports_bad_config_in_one_line(cli, tmp_path: Path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("this is not toml")
    result = cli("--config", cfg, "config")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"imagekit: error: config file {cfg}")
