"""The whole story, end to end, with the real ``imagekit`` command: ``make demo``.

Create a signing key; build a small appliance (or, with ``DEMO_FAST=1``, make the tiny test
appliance); make a "flora and fauna" read-only data disk; describe, sign and verify both;
start a marketplace (SQLite) that also serves the image bytes; publish both entries; launch
the appliance by its ID with the data disk attached and an ssh key in its context; show from
the guest's serial console that it read ``animals/dog.txt``; kill it; stop the server.

Every step runs the same command a person would type (printed before it runs), in a work
directory of its own (``DEMO_DIR``, default a new temporary directory) with imagekit's data,
cache and state directories inside it, so the demo never touches the user's own setup.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from ..entry import parse_entry_bytes
from ..settings import load_settings
from .tinyappliance import make_tiny_appliance

DOG = "The dog (Canis familiaris) is a domesticated descendant of the wolf."
EMAIL = "demo@example.org"
PASSPHRASE = "demo-passphrase"
BOOT_TIMEOUT_FAST = 240.0
BOOT_TIMEOUT_BUILT = 900.0

# The built appliance's first-boot script: cloud-init runs it; it reads the data disk by
# label and writes what it found to the serial console, where the demo looks for it.
GUEST_SCRIPT = """#!/bin/sh
mkdir -p /mnt/data
mount -o ro "$(blkid -L FLORA_FAUNA)" /mnt/data
echo "IMAGEKIT-DEMO: $(cat /etc/imagekit-demo), less at $(command -v less)" > /dev/ttyS0
for keys in /home/*/.ssh/authorized_keys; do
    [ -s "$keys" ] || continue
    echo "IMAGEKIT-DEMO: ssh key in $keys: $(cut -d' ' -f1,3 "$keys" | tail -1)" > /dev/ttyS0
done
echo "IMAGEKIT-DEMO: file /animals/dog.txt: $(cat /mnt/data/animals/dog.txt)" > /dev/ttyS0
"""

# The build step's script, run as root inside the image while it is built.
BUILD_SCRIPT = """#!/bin/sh
set -e
echo "built by imagekit build on $(date -u +%Y-%m-%d)" > /etc/imagekit-demo
"""


class DemoFailed(Exception):
    pass


def _imagekit() -> list[str]:
    script = Path(sys.executable).with_name("imagekit")
    return [str(script)] if script.exists() else [sys.executable, "-m", "imagekit"]


class Story:
    def __init__(self, work: Path, *, fast: bool) -> None:
        self.work = work
        self.fast = fast
        self.env = dict(os.environ)
        self.env.update(
            IMAGEKIT_CONFIG=str(work / "config.toml"),
            IMAGEKIT_DATA_DIR=str(work / "data"),
            IMAGEKIT_CACHE_DIR=str(work / "cache"),
            IMAGEKIT_STATE_DIR=str(work / "state"),
            IMAGEKIT_P12_PASSPHRASE=PASSPHRASE,
        )
        self.step_no = 0

    # --- narration and commands -----------------------------------------------------

    def step(self, title: str) -> None:
        self.step_no += 1
        print(f"\n== {self.step_no}. {title}", flush=True)

    def result(self, text: str) -> None:
        print(f"   -> {text}", flush=True)

    def imagekit(self, *args: str | Path, quiet: bool = False, live: bool = False) -> str:
        """Run imagekit, return its stdout; ``live`` lets its progress through to the terminal."""
        argv = [*_imagekit(), *map(str, args)]
        if not quiet:
            print("   $ imagekit " + shlex.join(argv[len(_imagekit()) :]), flush=True)
        proc = subprocess.run(
            argv,
            cwd=self.work,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=None if live else subprocess.PIPE,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            detail = "" if live else (proc.stderr or "").strip()
            raise DemoFailed(detail or f"imagekit {args[0]} exited {proc.returncode}")
        return proc.stdout.strip()

    # --- the story ------------------------------------------------------------------

    def run(self) -> None:
        self.step("Create an endorser key and certificate")
        (self.work / "keys").mkdir(exist_ok=True)
        self.imagekit("keygen", "--email", EMAIL, "--name", "Demo Endorser", "-o", "keys/demo")
        self.env["IMAGEKIT_KEY"] = str(self.work / "keys/demo.key")
        self.env["IMAGEKIT_CERT"] = str(self.work / "keys/demo.crt")
        self.env["IMAGEKIT_TRUST"] = str(self.work / "keys/demo.crt")
        ssh_key = self.ssh_key()
        # the key every launch injects, set once (as a user would in ~/.config/imagekit)
        config = self.work / "config.toml"
        config.write_text(f'ssh_key = "{ssh_key}"\n')
        self.result(
            f"keys/demo.key, keys/demo.crt, keys/demo.p12; ssh key {ssh_key.name} "
            "(ssh_key in config.toml)"
        )

        appliance, appliance_entry = self.appliance()

        self.step("Make the 'flora and fauna' read-only data disk and describe it")
        tree = self.flora_and_fauna()
        self.imagekit("cdrom", tree, "--label", "FLORA_FAUNA", "-o", "flora.iso")
        self.imagekit(
            "metadata",
            "flora.iso",
            "--kind",
            "disk",
            "--title",
            "Flora and fauna",
            "--tag",
            "flora-and-fauna",
            "--valid-days",
            "30",
            "-o",
            "flora.xml",
        )
        self.result(f"flora.iso, flora.xml: ID {self.entry_id('flora.xml')}")

        with self.marketplace() as url:
            self.step("Sign, verify and publish both entries (bytes served locally)")
            files = f"{url}/files"
            self.publish(appliance, appliance_entry, files)
            self.publish(self.work / "flora.iso", "flora.xml", files)
            app_id, flora_id = self.entry_id(appliance_entry), self.entry_id("flora.xml")
            self.result(f"appliance {app_id}, data disk {flora_id}")
            print(f"\n   Browse the catalogue: {url}/", flush=True)

            self.step("Launch the appliance by its ID, named, with the data disk")
            # no --ssh-key: launch injects the configured key (ssh_key in config.toml, as a
            # user sets it once; without it, ~/.ssh/id_*.pub)
            name = "demo"
            args: list[str | Path] = [
                "launch",
                app_id,
                "--name",
                name,
                "--readonly-disk",
                flora_id,
                "--allow-private-locations",
            ]
            if self.fast:
                args += ["--type", "t1.micro"]
            else:
                (self.work / "read-data.sh").write_text(GUEST_SCRIPT)
                args += ["--type", "m1.small", "--user-data", "read-data.sh"]
            self.imagekit(*args, live=True)
            try:
                self.result(f"instance {name}")
                print(self.imagekit("instances"), flush=True)
                print(self.imagekit("instances", name), flush=True)
                self.step("Show from inside the guest that it read animals/dog.txt")
                for line in self.wait_for_dog(name):
                    self.result(line)
            finally:
                self.step("Kill the instance and forget it")
                self.imagekit("kill", "--rm", name)
                self.result("qemu, overlay, context ISO and the record gone")
            self.step("Stop the marketplace")
        self.result("stopped")
        print("\nDemo complete.", flush=True)

    def appliance(self) -> tuple[Path, str]:
        """The appliance image and its unsigned entry."""
        if self.fast:
            self.step("Make the tiny test appliance (DEMO_FAST=1) and describe it")
            tiny = make_tiny_appliance(self.work / "appliance.raw")
            self.imagekit(
                "metadata",
                tiny.name,
                "--os",
                "linux",
                "--os-arch",
                "x86_64",
                "--title",
                "Demo appliance",
                "--tag",
                "demo-appliance",
                "--valid-days",
                "30",
                "-o",
                "appliance.xml",
            )
            self.result(
                f"{tiny.name}: Debian kernel + busybox initramfs, bootable disk; "
                f"appliance.xml: ID {self.entry_id('appliance.xml')}"
            )
            return tiny, "appliance.xml"
        self.step("Build a small Debian appliance with diskimage-builder")
        (self.work / "motd").write_text("Built with imagekit\n")
        (self.work / "setup.sh").write_text(BUILD_SCRIPT)
        # The layer cache is the user's own (a pure cache keyed by content): a second demo
        # reuses the base and package layers instead of bootstrapping Debian again.
        layers = load_settings().cache_dir
        self.imagekit(
            "build",
            "--base",
            "debian:bookworm",
            "--package",
            "less",
            "--script",
            "setup.sh",
            "--file",
            "/etc/motd=motd",
            "--format",
            "qcow2",
            "--cache-dir",
            layers,
            "--title",
            "Demo appliance",
            "--tag",
            "demo-appliance",
            "-o",
            "appliance.qcow2",
            live=True,
        )
        entry = "appliance.qcow2.xml"  # written by the build, checksums and all
        self.result(f"appliance.qcow2, {entry}: ID {self.entry_id(entry)}")
        return self.work / "appliance.qcow2", entry

    def entry_id(self, entry: str) -> str:
        return parse_entry_bytes((self.work / entry).read_bytes()).identifier

    def publish(self, image: Path, entry: str, files_url: str) -> None:
        self.imagekit(
            "publish",
            entry,
            "--image",
            image,
            "--to",
            "files",
            "--url-base",
            files_url,
            "--prepare",
        )
        self.imagekit("sign", entry)
        for line in self.imagekit("verify", entry, "--image", image).splitlines():
            self.result(line)
        self.imagekit("publish", entry)

    def ssh_key(self) -> Path:
        key = self.work / "keys/id_ed25519"
        if shutil.which("ssh-keygen"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", EMAIL, "-f", str(key)],
                check=True,
                stdin=subprocess.DEVNULL,
            )
        else:  # the key only needs to reach the guest; any valid public key line will do
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import ed25519

            public = ed25519.Ed25519PrivateKey.generate().public_key()
            line = public.public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            )
            key.with_suffix(".pub").write_bytes(line + f" {EMAIL}\n".encode())
        return key.with_name("id_ed25519.pub")

    def flora_and_fauna(self) -> Path:
        tree = self.work / "flora-and-fauna"
        texts = {
            "animals/dog.txt": DOG,
            "animals/cat.txt": "The cat (Felis catus) is a small domesticated carnivore.",
            "plants/oak.txt": "Quercus robur, the English oak.",
            "README.txt": "A read-only data disk made with imagekit cdrom.",
        }
        for name, text in texts.items():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            (tree / name).write_text(text + "\n")
        return tree

    @contextlib.contextmanager
    def marketplace(self) -> Iterator[str]:
        self.step("Start the marketplace (SQLite) serving the image files")
        port = _free_port()
        (self.work / "files").mkdir(exist_ok=True)
        argv = [
            *_imagekit(),
            "serve",
            "--port",
            str(port),
            "--files-dir",
            "files",
            "--trust",
            self.env["IMAGEKIT_TRUST"],
        ]
        print("   $ imagekit " + shlex.join(argv[len(_imagekit()) :]), flush=True)
        log = (self.work / "server.log").open("wb")
        server = subprocess.Popen(
            argv, cwd=self.work, env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        url = f"http://127.0.0.1:{port}"
        self.env["IMAGEKIT_MARKETPLACE"] = url
        try:
            _wait_http(url, server)
            self.result(f"listening on {url} (log: server.log)")
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()

    def wait_for_dog(self, instance: str) -> list[str]:
        """The guest's report lines, once the dog line is among them."""
        deadline = time.monotonic() + (BOOT_TIMEOUT_FAST if self.fast else BOOT_TIMEOUT_BUILT)
        report = re.compile(r"IMAGEKIT-(?:TINY|DEMO): .*")
        print(f"   $ imagekit console {instance}   (until the line appears)", flush=True)
        while time.monotonic() < deadline:
            lines = [
                m.group(0).strip()
                for m in report.finditer(self.imagekit("console", instance, quiet=True))
            ]
            dog = [line for line in lines if "file /animals/dog.txt:" in line]
            if dog:
                if DOG not in dog[0]:
                    raise DemoFailed(f"the guest read something else: {dog[0]}")
                return lines
            time.sleep(3)
        raise DemoFailed("the guest did not report animals/dog.txt in time (see the console)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, server: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise DemoFailed(f"the marketplace exited with {server.returncode} (see server.log)")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/metadata", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise DemoFailed("the marketplace did not start in time (see server.log)")


def main() -> int:
    fast = os.environ.get("DEMO_FAST", "") not in ("", "0")
    work = Path(os.environ.get("DEMO_DIR") or tempfile.mkdtemp(prefix="imagekit-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"imagekit demo in {work}" + (" (DEMO_FAST=1: tiny test appliance)" if fast else ""))
    try:
        Story(work.resolve(), fast=fast).run()
    except DemoFailed as e:
        print(f"\ndemo failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
