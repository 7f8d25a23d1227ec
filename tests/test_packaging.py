"""The built wheel, installed into a fresh virtual environment outside the checkout, works.

What a user gets from ``pip install imagekit`` is the wheel, not this tree: package data that
is only found through the checkout (elements, the schema, templates) would pass every other
test and fail for them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def run(
    argv: list[str | Path], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"{argv}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(bin directory, environment) of a fresh venv holding only the wheel and its deps."""
    work = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", work, ROOT], cwd=work)
    (wheel,) = work.glob("imagekit-*.whl")
    env_dir = work / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    run([bin_dir / "pip", "install", "-q", wheel], cwd=work)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGEKIT_", "PYTHON"))}
    env.update(
        HOME=str(work / "home"),
        PATH=f"{bin_dir}:{env['PATH']}",
        IMAGEKIT_P12_PASSPHRASE="smoke-test",
    )
    return bin_dir, env


def test_every_command_answers_help(installed, tmp_path: Path):
    bin_dir, env = installed
    listing = run([bin_dir / "imagekit", "--help"], cwd=tmp_path, env=env).stdout
    commands = [
        line.split()[0] for line in listing.split("Commands:")[1].splitlines() if line.strip()
    ]
    assert {"build", "launch", "sign", "verify", "serve"} <= set(commands)
    for command in commands:
        run([bin_dir / "imagekit", command, "--help"], cwd=tmp_path, env=env)


def test_keygen_metadata_sign_verify_and_cdrom_from_the_wheel(installed, tmp_path: Path):
    bin_dir, env = installed
    ik = bin_dir / "imagekit"
    run(
        [ik, "keygen", "--email", "smoke@example.org", "--name", "Smoke", "-o", "me"],
        cwd=tmp_path,
        env=env,
    )
    (tmp_path / "disk.img").write_bytes(os.urandom(1 << 16))
    run(
        [
            ik,
            "metadata",
            "disk.img",
            "--os",
            "none",
            "--os-version",
            "none",
            "--os-arch",
            "none",
            "--kind",
            "disk",
            "-o",
            "entry.xml",
        ],
        cwd=tmp_path,
        env=env,
    )
    run([ik, "sign", "entry.xml", "--key", "me.key", "--cert", "me.crt"], cwd=tmp_path, env=env)
    run(
        [ik, "verify", "entry.xml", "--trust", "me.crt", "--image", "disk.img"],
        cwd=tmp_path,
        env=env,
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "README").write_text("hello\n")
    run([ik, "cdrom", "data", "--label", "SMOKE", "-o", "data.iso"], cwd=tmp_path, env=env)
    listed = run([ik, "cdrom", "--list", "data.iso"], cwd=tmp_path, env=env).stdout
    assert "README" in listed


def test_shipped_data_is_found_inside_the_installed_package(installed, tmp_path: Path):
    """The diskimage-builder elements (with their scripts executable, as diskimage-builder
    requires), the XML Schema and the server's templates come from site-packages."""
    bin_dir, env = installed
    probe = (
        "import os, imagekit, marketplace_server\n"
        "from pathlib import Path\n"
        "from lxml import etree\n"
        "from imagekit.build.elements import SHIPPED_ELEMENTS as E\n"
        "from imagekit.entry import SCHEMA_FILE\n"
        "site = Path(imagekit.__file__).parent\n"
        "assert E.is_relative_to(site) and SCHEMA_FILE.is_relative_to(site), (E, site)\n"
        "scripts = [p for p in E.rglob('*') if p.parent.name.endswith('.d')]\n"
        "assert len(scripts) >= 3 and all(os.access(p, os.X_OK) for p in scripts), scripts\n"
        "etree.XMLSchema(etree.parse(str(SCHEMA_FILE)))\n"
        "t = Path(marketplace_server.__file__).parent / 'templates' / 'entry.html'\n"
        "assert t.exists(), t\n"
        "print(E)\n"
    )
    out = run([bin_dir / "python", "-c", probe], cwd=tmp_path, env=env).stdout
    assert "site-packages" in out and str(ROOT) not in out
