"""Context media: each scheme's ISO read back by xorriso, shell files sourced by real shells."""

from __future__ import annotations

import base64
import email
import email.policy
import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from imagekit.build.elements import SHIPPED_ELEMENTS
from imagekit.context import (
    ContextError,
    ContextFile,
    ContextScheme,
    ContextSpec,
    UserDataType,
    check_hostname,
    detect_user_data,
    make_context_iso,
    parse_ssh_key,
    parse_variable,
    render_context,
)

pytestmark = pytest.mark.skipif(shutil.which("xorriso") is None, reason="needs xorriso")

# a real ed25519 public key (ssh-keygen output)
ED25519 = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIClId0OLdjcH/9k62qG1qgHApM0qy3FFWUGhG8AJTJi/ "
    "me@example.org"
)
ECDSA = (
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEez"
    "OmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg= "
)
SCRIPT = b"#!/bin/sh\necho hello from $(hostname)\n"

# values that must stay data when a shell sources context.sh
TRICKY = {
    "QUOTE": "it's a 'quoted' value",
    "DOUBLE": 'say "hi"',
    "SUBST": "$(touch /tmp/imagekit-pwned) `touch /tmp/imagekit-pwned2` ${HOME}",
    "NEWLINES": "line one\nline two\n\nline four",
    "BACKSLASH": "a\\b\\'c\\n",
    "EMPTY": "",
    "UNICODE": "ümlaut \u2013 \u2713",
    "SEMI": "a; rm -rf /; echo '",
}


def read_iso(iso: Path, tmp_path: Path) -> Path:
    out = tmp_path / "iso-out"
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(out)],
        check=True,
        capture_output=True,
    )
    return out


def iso_label(iso: Path) -> str:
    info = subprocess.run(
        ["isoinfo", "-d", "-i", str(iso)], check=True, capture_output=True
    ).stdout.decode()
    return next(
        ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("Volume id:")
    )


def full_spec(**extra: object) -> ContextSpec:
    args: dict[str, object] = {
        "instance_id": "i-0123456789",
        "hostname": "web1",
        "ssh_keys": [ED25519, ECDSA],
        "user_data": SCRIPT,
        "files": [
            ContextFile("/etc/motd", b"welcome\n", 0o644),
            ContextFile("/usr/local/bin/tool", b"#!/bin/sh\n", 0o755),
        ],
    }
    args.update(extra)
    return ContextSpec.build(**args)  # type: ignore[arg-type]


def test_nocloud_medium(tmp_path: Path) -> None:
    spec = full_spec(
        user_data=None,
        variables={"ROLE": "web"},
        network_config=b"version: 2\nethernets:\n  eth0:\n    dhcp4: true\n",
    )
    iso = make_context_iso(ContextScheme.NOCLOUD, spec, tmp_path / "seed.iso")
    assert iso_label(iso) == "cidata"
    out = read_iso(iso, tmp_path)
    meta = yaml.safe_load((out / "meta-data").read_text())
    assert meta == {
        "instance-id": "i-0123456789",
        "local-hostname": "web1",
        "public-keys": [ED25519, ECDSA.strip()],
        "variables": {"ROLE": "web"},
    }
    user = (out / "user-data").read_bytes()
    assert user.startswith(b"#cloud-config\n")
    files = {f["path"]: f for f in yaml.safe_load(user)["write_files"]}
    assert base64.b64decode(files["/etc/motd"]["content"]) == b"welcome\n"
    assert files["/usr/local/bin/tool"]["permissions"] == "0755"
    assert yaml.safe_load((out / "network-config").read_text())["version"] == 2


def test_nocloud_script_and_files_become_mime_multipart(tmp_path: Path) -> None:
    medium = render_context(ContextScheme.NOCLOUD, full_spec())
    message = email.message_from_bytes(medium.files["user-data"], policy=email.policy.default)
    assert message.is_multipart()
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/x-shellscript", "text/cloud-config"]
    assert parts[0].get_payload(decode=True) == SCRIPT
    config = yaml.safe_load(parts[1].get_payload(decode=True))
    assert {f["path"] for f in config["write_files"]} == {"/etc/motd", "/usr/local/bin/tool"}
    assert "list(append)" in parts[1]["Merge-Type"]


def test_nocloud_user_mime_gets_files_part_appended() -> None:
    user = render_context(ContextScheme.NOCLOUD, full_spec()).files["user-data"]
    again = render_context(
        ContextScheme.NOCLOUD, full_spec(user_data=user, files=[ContextFile("/etc/extra", b"x")])
    ).files["user-data"]
    parts = list(email.message_from_bytes(again, policy=email.policy.default).iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/x-shellscript",
        "text/cloud-config",
        "text/cloud-config",
    ]


def test_nocloud_user_data_alone_is_kept_verbatim() -> None:
    spec = full_spec(files=[], user_data=b"#cloud-config\npackages: [htop]\n")
    assert (
        render_context("nocloud", spec).files["user-data"] == b"#cloud-config\npackages: [htop]\n"
    )


def test_configdrive_medium(tmp_path: Path) -> None:
    net = json.dumps({"links": [], "networks": [], "services": []}).encode()
    spec = full_spec(variables={"ROLE": "web"}, network_config=net)
    iso = make_context_iso(ContextScheme.CONFIGDRIVE, spec, tmp_path / "cd.iso")
    assert iso_label(iso) == "config-2"
    out = read_iso(iso, tmp_path)
    meta = json.loads((out / "openstack/latest/meta_data.json").read_text())
    assert meta["uuid"] == "i-0123456789"
    assert meta["hostname"] == "web1"
    assert meta["public_keys"] == {"key0": ED25519, "key1": ECDSA.strip()}
    assert meta["meta"] == {"ROLE": "web"}
    for entry in meta["files"]:
        content = (out / "openstack" / entry["content_path"].lstrip("/")).read_bytes()
        wanted = {"/etc/motd": b"welcome\n", "/usr/local/bin/tool": b"#!/bin/sh\n"}
        assert content == wanted[entry["path"]]
    assert (out / "openstack/latest/user_data").read_bytes() == SCRIPT
    assert json.loads((out / "openstack/latest/network_data.json").read_text())["links"] == []


def test_configdrive_refuses_yaml_network_config() -> None:
    with pytest.raises(ContextError, match=r"network_data\.json"):
        render_context("configdrive", full_spec(network_config=b"version: 2\n"))


SHELLS = [s for s in ("sh", "dash", "bash", "busybox") if shutil.which(s)]


def source_values(shell: str, context_sh: Path, names: list[str]) -> dict[str, str]:
    """Source ``context_sh`` in ``shell`` and dump each variable NUL-separated."""
    dump = "; ".join(f'printf "%s\\0" "${{{n}}}"' for n in names)
    argv = ["busybox", "sh"] if shell == "busybox" else [shell]
    out = subprocess.run(
        [*argv, "-c", f'. "$1"; {dump}', "sh", str(context_sh)],
        check=True,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout
    return dict(zip(names, out.decode().split("\0")[:-1], strict=True))


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("scheme", ["opennebula", "stratuslab"])
def test_context_sh_values_stay_data(scheme: str, shell: str, tmp_path: Path) -> None:
    spec = full_spec(variables=TRICKY)
    iso = make_context_iso(scheme, spec, tmp_path / "ctx.iso")
    out = read_iso(iso, tmp_path)
    values = source_values(shell, out / "context.sh", sorted(TRICKY))
    assert values == TRICKY
    assert not Path("/tmp/imagekit-pwned").exists()
    assert not Path("/tmp/imagekit-pwned2").exists()


@pytest.mark.parametrize("shell", SHELLS)
def test_opennebula_variables(shell: str, tmp_path: Path) -> None:
    iso = make_context_iso("opennebula", full_spec(), tmp_path / "one.iso")
    assert iso_label(iso) == "CONTEXT"
    out = read_iso(iso, tmp_path)
    names = [
        "SET_HOSTNAME",
        "SSH_PUBLIC_KEY",
        "VMID",
        "USER_DATA",
        "START_SCRIPT_BASE64",
        "IMAGEKIT_FILES",
    ]
    values = source_values(shell, out / "context.sh", names)
    assert values["SET_HOSTNAME"] == "web1"
    assert values["SSH_PUBLIC_KEY"].splitlines() == [ED25519, ECDSA.strip()]
    assert values["VMID"] == "i-0123456789"
    assert values["USER_DATA"].encode() == SCRIPT
    assert base64.b64decode(values["START_SCRIPT_BASE64"]) == SCRIPT
    listed = [line.split(" ", 2) for line in values["IMAGEKIT_FILES"].splitlines()]
    assert listed == [["0000", "0644", "/etc/motd"], ["0001", "0755", "/usr/local/bin/tool"]]
    assert (out / "files/0000").read_bytes() == b"welcome\n"


def test_opennebula_gzip_user_data_is_base64() -> None:
    data = gzip.compress(b"#cloud-config\n{}\n", mtime=0)
    text = render_context("opennebula", full_spec(user_data=data)).files["context.sh"]
    assert b"USERDATA_ENCODING='base64'" in text
    assert base64.b64encode(data) in text


def test_stratuslab_medium(tmp_path: Path) -> None:
    iso = make_context_iso("stratuslab", full_spec(), tmp_path / "sl.iso")
    assert iso_label(iso) == "_STRATUSLAB"
    out = read_iso(iso, tmp_path)
    assert {p.name for p in out.iterdir()} == {
        "context.sh",
        "init.sh",
        "prolog.sh",
        "epilog.sh",
        "files",
    }
    values = source_values(
        "sh", out / "context.sh", ["HOSTNAME", "PUBLIC_KEY", "SCRIPT_EXEC", "INSTANCE_ID"]
    )
    assert values["HOSTNAME"] == "web1"
    assert values["PUBLIC_KEY"].splitlines()[0] == ED25519
    assert values["SCRIPT_EXEC"] + "\n" == SCRIPT.decode()
    assert (out / "init.sh").stat().st_mode & 0o111
    for script in ("init.sh", "prolog.sh", "epilog.sh"):
        subprocess.run(["sh", "-n", str(out / script)], check=True)


@pytest.mark.parametrize("scheme", ["opennebula", "stratuslab"])
def test_shell_schemes_refuse_network_config(scheme: str) -> None:
    with pytest.raises(ContextError, match="network-config"):
        render_context(scheme, full_spec(network_config=b"{}"))


@pytest.mark.parametrize("scheme", ["opennebula", "stratuslab"])
def test_var_may_not_override_scheme_variable(scheme: str) -> None:
    name = "HOSTNAME"
    with pytest.raises(ContextError, match="dedicated option"):
        render_context(scheme, full_spec(variables={name: "evil"}))


@pytest.mark.parametrize("scheme", list(ContextScheme))
def test_same_spec_same_bytes(scheme: ContextScheme, tmp_path: Path) -> None:
    a = make_context_iso(scheme, full_spec(), tmp_path / "a.iso").read_bytes()
    b = make_context_iso(scheme, full_spec(), tmp_path / "b.iso").read_bytes()
    assert a == b


def test_instance_id_defaults_to_a_fresh_uuid() -> None:
    a, b = ContextSpec(), ContextSpec()
    assert a.instance_id != b.instance_id
    assert len(a.instance_id) == 36


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"#!/bin/sh\n", UserDataType.SCRIPT),
        (b"#cloud-config\n{}", UserDataType.CLOUD_CONFIG),
        (b"#include\nhttp://example.org/a\n", UserDataType.INCLUDE),
        (b"#cloud-boothook\n", UserDataType.BOOTHOOK),
        (gzip.compress(b"#!/bin/sh\n"), UserDataType.GZIP),
        (
            b'Content-Type: multipart/mixed; boundary="XX"\nMIME-Version: 1.0\n\n--XX\n'
            b"Content-Type: text/x-shellscript\n\n#!/bin/sh\n--XX--\n",
            UserDataType.MIME,
        ),
    ],
    ids=["script", "cloud-config", "include", "boothook", "gzip", "mime"],
)
def test_user_data_detected(data: bytes, kind: UserDataType) -> None:
    assert detect_user_data(data) is kind


@pytest.mark.parametrize(
    "data",
    [b"echo no shebang\n", b"", b"Content-Type: text/plain\n\nx"],
    ids=["no-shebang", "empty", "mime-not-multipart"],
)
def test_user_data_unknown_refused(data: bytes) -> None:
    with pytest.raises(ContextError, match="user-data: unrecognized type"):
        ContextSpec.build(user_data=data)


@pytest.mark.parametrize(
    "line",
    [
        "ssh-ed25519",
        "ssh-foo AAAAC3NzaC1lZDI1NTE5AAAAIClId0OLdjcH",
        "ssh-ed25519 not*base64",
        # an RSA blob labelled ed25519
        "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ==",
        ED25519 + "\n" + ED25519,
        "-----BEGIN OPENSSH PRIVATE KEY-----",
    ],
    ids=["no-blob", "unknown-type", "bad-base64", "type-mismatch", "two-lines", "private"],
)
def test_bad_ssh_key_refused(line: str) -> None:
    with pytest.raises(ContextError, match="ssh key"):
        parse_ssh_key(line)


def test_good_ssh_keys_normalized() -> None:
    assert parse_ssh_key("  " + ED25519 + "\n") == ED25519
    assert parse_ssh_key(ECDSA) == ECDSA.strip()


@pytest.mark.parametrize("name", ["web1", "web-1.example.org", "A" * 63])
def test_hostname_accepted(name: str) -> None:
    assert check_hostname(name) == name


@pytest.mark.parametrize(
    "name", ["", "-web", "web-", "web_1", "a..b", "a" * 64, "web 1", "x;reboot", "é"]
)
def test_hostname_refused(name: str) -> None:
    with pytest.raises(ContextError, match="hostname"):
        check_hostname(name)


@pytest.mark.parametrize("text", ["NOEQUALS", "1X=y", "A-B=c", "=v", "A=\x00"])
def test_bad_variable_refused(text: str) -> None:
    with pytest.raises(ContextError, match="variable"):
        parse_variable(text)


@pytest.mark.parametrize("dest", ["relative/path", "/etc/../root/x", "/", "/a//b", "/a/"])
def test_bad_file_destination_refused(dest: str) -> None:
    with pytest.raises(ContextError, match="file destination"):
        ContextFile(dest, b"x")


def test_instance_id_refused_when_unsafe() -> None:
    with pytest.raises(ContextError, match="instance id"):
        ContextSpec.build(instance_id="i d; rm")


def test_unknown_scheme() -> None:
    with pytest.raises(ContextError, match="unknown context scheme"):
        render_context("vmware", ContextSpec())


AGENT = SHIPPED_ELEMENTS / "imagekit-context/static/usr/local/sbin/imagekit-context"


@pytest.mark.parametrize("shell", [s for s in ("dash", "busybox") if shutil.which(s)])
@pytest.mark.parametrize("scheme", list(ContextScheme))
def test_guest_agent_applies_each_scheme_once(
    scheme: ContextScheme, shell: str, tmp_path: Path
) -> None:
    ran = tmp_path / "ran.log"
    script = f"#!/bin/sh\necho ran >> {ran}\n".encode()
    # NoCloud with files makes MIME user-data, which is cloud-init's to run, not the agent's
    files = [] if scheme is ContextScheme.NOCLOUD else full_spec().files
    spec = full_spec(user_data=script, ssh_keys=[ED25519, ECDSA], files=files)
    medium = read_iso(make_context_iso(scheme, spec, tmp_path / "ctx.iso"), tmp_path)
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    argv = ["busybox", "sh"] if shell == "busybox" else [shell]
    for _ in range(2):  # a second boot must not run the script again nor duplicate keys
        subprocess.run(
            [*argv, str(AGENT), "--dir", str(medium)],
            check=True,
            capture_output=True,
            env={"PATH": "/usr/bin:/bin", "IMAGEKIT_CONTEXT_ROOT": str(root)},
        )
    assert (root / "etc/hostname").read_text() == "web1\n"
    assert (root / "root/.ssh/authorized_keys").read_text().splitlines() == [ED25519, ECDSA.strip()]
    assert ran.read_text() == "ran\n"
    if scheme in (ContextScheme.OPENNEBULA, ContextScheme.STRATUSLAB):
        assert (root / "etc/motd").read_bytes() == b"welcome\n"
        assert (root / "usr/local/bin/tool").stat().st_mode & 0o777 == 0o755


def test_element_layout() -> None:
    element = AGENT.parents[4]
    assert (element / "README.rst").exists()
    for hook in ("install.d/60-imagekit-context", "post-install.d/60-imagekit-context"):
        assert (element / hook).stat().st_mode & 0o111, hook
        subprocess.run(["bash", "-n", str(element / hook)], check=True)
    assert AGENT.stat().st_mode & 0o111
    subprocess.run(["sh", "-n", str(AGENT)], check=True)
    unit = (element / "static/etc/systemd/system/imagekit-context.service").read_text()
    assert "ExecStart=/usr/local/sbin/imagekit-context" in unit
    assert "WantedBy=multi-user.target" in unit


@pytest.mark.parametrize("scheme", ["nocloud", "configdrive", "opennebula", "stratuslab"])
def test_context_iso_with_user_data_secrets_is_not_world_readable(
    scheme: str, tmp_path: Path
) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        iso = make_context_iso(scheme, full_spec(), tmp_path / "ctx.iso")
    finally:
        os.umask(old)
    assert stat.S_IMODE(iso.stat().st_mode) == 0o600


@pytest.mark.parametrize("scheme", list(ContextScheme))
def test_every_scheme_tells_the_guest_to_enable_the_swap_disk(
    scheme: ContextScheme, tmp_path: Path
) -> None:
    spec = full_spec(swap_label="imagekit-swap")
    files = render_context(scheme, spec).files
    if scheme is ContextScheme.NOCLOUD:
        vendor = yaml.safe_load(files["vendor-data"])
        assert files["vendor-data"].startswith(b"#cloud-config\n")
        assert vendor == {"mounts": [["LABEL=imagekit-swap", "none", "swap", "sw", "0", "0"]]}
    elif scheme is ContextScheme.CONFIGDRIVE:
        vendor = json.loads(files["openstack/latest/vendor_data.json"])["cloud-init"]
        assert yaml.safe_load(vendor)["mounts"][0][:3] == ["LABEL=imagekit-swap", "none", "swap"]
    else:
        assert b"IMAGEKIT_SWAP='imagekit-swap'\n" in files["context.sh"]
    # no swap disk, no instruction
    plain = render_context(scheme, full_spec()).files
    assert not any(b"imagekit-swap" in data for data in plain.values())


@pytest.mark.parametrize("scheme", list(ContextScheme))
def test_guest_agent_enables_the_swap_the_context_names(
    scheme: ContextScheme, tmp_path: Path
) -> None:
    spec = full_spec(swap_label="imagekit-swap", files=[])
    medium = read_iso(make_context_iso(scheme, spec, tmp_path / "ctx.iso"), tmp_path)
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    subprocess.run(
        ["sh", str(AGENT), "--dir", str(medium)],
        check=True,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "IMAGEKIT_CONTEXT_ROOT": str(root)},
    )
    # with a test root the agent records what it would hand to swapon -L
    assert (root / "var/lib/imagekit-context/swap").read_text() == "imagekit-swap\n"


def test_stratuslab_init_sh_enables_the_swap_disk() -> None:
    files = render_context(ContextScheme.STRATUSLAB, full_spec(swap_label="imagekit-swap")).files
    assert b'swapon -L "$IMAGEKIT_SWAP"' in files["init.sh"]


def test_swap_label_is_checked() -> None:
    with pytest.raises(ContextError, match="swap label"):
        ContextSpec.build(swap_label="bad label; rm -rf /")
