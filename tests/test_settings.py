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


def test_ssh_key_setting_then_the_default_key_under_home(tmp_path: Path):
    from imagekit.launch.sshkeys import find_default_ssh_key

    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    s = load_settings({}, env={}, path=tmp_path / "none.toml")
    assert find_default_ssh_key(s, home=home) is None
    (home / ".ssh/id_rsa.pub").write_text("ssh-rsa AAAA\n")
    assert find_default_ssh_key(s, home=home) == home / ".ssh/id_rsa.pub"
    (home / ".ssh/id_ed25519.pub").write_text("ssh-ed25519 AAAA\n")
    assert find_default_ssh_key(s, home=home) == home / ".ssh/id_ed25519.pub"
    mine = tmp_path / "site.pub"
    mine.write_text("ssh-ed25519 AAAA\n")
    s = load_settings({}, env={"IMAGEKIT_SSH_KEY": str(mine)}, path=tmp_path / "none.toml")
    assert find_default_ssh_key(s, home=home) == mine
    s = load_settings(
        {}, env={"IMAGEKIT_SSH_KEY": str(tmp_path / "gone.pub")}, path=tmp_path / "none.toml"
    )
    with pytest.raises(InputError, match=r"gone\.pub: no such file"):
        find_default_ssh_key(s, home=home)


def test_port_address_must_be_an_address(tmp_path: Path):
    none = tmp_path / "none.toml"
    assert load_settings({}, env={}, path=none).port_address == "127.0.0.1"
    assert (
        load_settings({}, env={"IMAGEKIT_PORT_ADDRESS": "0.0.0.0"}, path=none).port_address
        == "0.0.0.0"
    )
    with pytest.raises(InputError, match="port_address must be an IP address"):
        load_settings({}, env={"IMAGEKIT_PORT_ADDRESS": "localhost"}, path=none)


def test_types_come_from_the_config_file_only(tmp_path: Path):
    with pytest.raises(
        InputError, match="IMAGEKIT_TYPES: setting 'types' is read from the config file only"
    ):
        load_settings({}, env={"IMAGEKIT_TYPES": "x"}, path=tmp_path / "none.toml")
