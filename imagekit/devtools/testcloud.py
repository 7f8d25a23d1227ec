"""A real single-node OpenStack on loopback, from Debian 12's own packages (release Zed).

What the OpenStack backend is tested and benchmarked against::

    python -m imagekit.devtools.testcloud up [--dir DIR]     # install, configure, start, wait
    python -m imagekit.devtools.testcloud status [--dir DIR]
    python -m imagekit.devtools.testcloud down [--dir DIR]   # stop every daemon by PID

Services: keystone (fernet tokens), glance-api (file store, ``os_hash_algo`` sha512),
placement, nova-api, -conductor, -scheduler, -compute (libvirt driver, qemu under TCG),
neutron-server (ML2, no agents, no networks: servers are created with ``networks="none"``,
compute microversion >= 2.37; Zed goes up to 2.93), rabbitmq, libvirtd + virtlogd. Guests get
the ``pc`` (i440fx) machine: the config drive (``config_drive=True``, label ``config-2``) is an
IDE CD-ROM, ``/dev/sr0`` in the guest. No block storage: every cinder back end needs LVM
(device-mapper), NFS or iSCSI in the host kernel, and these hosts have none of them, so the
catalog has no volume service.

Everything the cloud writes lives under DIR (default ``/var/tmp/imagekit-testcloud``):
``etc/`` configs, ``data/`` SQLite databases, ``log/<service>.log``, ``run/<service>.pid``,
images, instances, and ``clouds.yaml`` with the clouds ``imagekit-test`` (admin) and
``imagekit-test-demo`` (a member of project ``demo``). Every listener is on 127.0.0.1.
The only things written outside DIR are the packages themselves (and libvirt's runtime
sockets under /run/libvirt): libvirtd and virtlogd see DIR/etc/libvirt as /etc/libvirt
through a bind mount in their own mount namespace.

``up`` is idempotent: on a running cloud it checks the recorded PIDs and keystone and returns
in well under a second; after a reboot it starts the daemons again without re-creating the
databases. The comments name the measured quirk behind each non-default choice.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import httpx
import yaml

from .._files import atomic_write
from .._run import child_env, run
from ..errors import CommandError, EnvironmentProblem

if TYPE_CHECKING:
    from openstack.connection import Connection
    from openstack.identity.v3._proxy import Proxy as IdentityV3

log = logging.getLogger(__name__)

DEFAULT_DIR = Path("/var/tmp/imagekit-testcloud")
CLOUD = "imagekit-test"
DEMO_CLOUD = "imagekit-test-demo"
HOST = "127.0.0.1"
REGION = "RegionOne"
# Test-only credentials for a cloud that listens on loopback only.
ADMIN_PASSWORD = "imagekit-admin"
DEMO_PASSWORD = "imagekit-demo"
SERVICE_PASSWORD = "imagekit-service"
RABBIT_URL = f"rabbit://guest:guest@{HOST}:5672/"
KEYSTONE_URL = f"http://{HOST}:5000/v3"
PORTS = {"keystone": 5000, "glance": 9292, "placement": 8778, "nova": 8774, "neutron": 9696}

# Small enough for the tiny test appliance (and a few of them side by side on 2 cores);
# m1.large for a real Debian appliance (its disk is sparse: 10 GiB cost nothing until written).
FLAVORS = (
    # name, id, MiB, vCPUs, GiB disk
    ("m1.tiny", "1", 128, 1, 1),
    ("m1.small", "2", 256, 1, 1),
    ("m1.medium", "3", 512, 1, 2),
    ("m1.large", "4", 1024, 1, 10),
)

APT_PACKAGES = (
    "keystone",
    "glance-api",
    "placement-api",
    "nova-api",
    "nova-conductor",
    "nova-scheduler",
    "nova-compute-qemu",
    "neutron-server",
    "rabbitmq-server",
    "python3-openstackclient",
    "genisoimage",
    "sudo",  # nova writes the config drive with genisoimage, privsep via sudo
)

# Debian's OpenStack libraries are importable only by Debian's interpreter; `python3` on PATH
# may be another one (pyenv, a venv).
SYSTEM_PYTHON = "/usr/bin/python3"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# Maintainer scripts would otherwise start every service with the packages' own configs.
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
POLICY_RC_D_TEXT = "#!/bin/sh\n# imagekit testcloud: daemons are started by their owner\nexit 101\n"

# "No database, no endpoint registration, no rabbit/keystone set-up" for every package asking.
DEBCONF = """\
keystone keystone/configure_db boolean false
keystone keystone/create-admin-tenant boolean false
keystone keystone/register-endpoint boolean false
glance-common glance/configure_db boolean false
glance-common glance/configure_rabbit boolean false
glance-common glance/configure_ksat boolean false
glance-api glance/configure_api-endpoint boolean false
placement-common placement/configure_db boolean false
placement-common placement/configure_ksat boolean false
placement-api placement/configure_api-endpoint boolean false
nova-common nova/configure_db boolean false
nova-common nova/configure_rabbit boolean false
nova-common nova/configure_ksat boolean false
nova-common nova/configure_neutron boolean false
nova-common nova/configure_placement boolean false
nova-api novaapi/configure_db boolean false
nova-api nova/configure_api-endpoint boolean false
neutron-common neutron/configure_db boolean false
neutron-common neutron/configure_rabbit boolean false
neutron-common neutron/configure_ksat boolean false
neutron-common neutron/configure_nova boolean false
neutron-server neutron/configure_api-endpoint boolean false
"""


class TestCloudError(EnvironmentProblem):
    """The test cloud could not be installed, configured or started."""

    __test__ = False  # not a pytest test class


@dataclasses.dataclass(frozen=True)
class RunningCloud:
    """A test cloud that answers: where its client configuration is and what it is called."""

    directory: Path
    clouds_yaml: Path
    cloud: str = CLOUD
    demo_cloud: str = DEMO_CLOUD
    flavors: tuple[str, ...] = tuple(f[0] for f in FLAVORS)
    block_storage: bool = False  # no cinder here (see the module's docstring)

    def env(self, *, demo: bool = False) -> dict[str, str]:
        """``OS_CLIENT_CONFIG_FILE`` and ``OS_CLOUD`` for a client (CLI or SDK) of this cloud."""
        return {
            "OS_CLIENT_CONFIG_FILE": str(self.clouds_yaml),
            "OS_CLOUD": self.demo_cloud if demo else self.cloud,
        }

    def connect(self, *, demo: bool = False) -> Connection:
        """An openstacksdk connection as admin (or as the demo user)."""
        return _connect(self.clouds_yaml, self.demo_cloud if demo else self.cloud)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where everything of one test cloud lives."""

    root: Path

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "log"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def clouds_yaml(self) -> Path:
        return self.root / "clouds.yaml"

    def db(self, name: str) -> str:
        # timeout=30 on every SQLite URL (nova's cell mappings included): without it concurrent
        # services fail with "database is locked".
        return f"sqlite:///{self.data / name}.sqlite?timeout=30"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def done(self, step: str) -> Path:
        return self.state / f"{step}.done"


@dataclasses.dataclass
class Daemon:
    """One long-running process: how to start it and how to know it is ready."""

    name: str
    argv: list[str]
    ready: Callable[[], bool]
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    timeout: float = 120.0
    # what its /proc cmdline contains (a recorded PID is trusted only then); the program's
    # name unless wrappers (unshare, sh) exec another one
    marker: str = ""
    # answers when something else already listens where it would (checked before a start)
    occupied: Callable[[], bool] | None = None
    started_at: dt.datetime | None = None  # set when this run started it (UTC)


# --- small helpers ---------------------------------------------------------------------------


def _ini(sections: Mapping[str, Mapping[str, object]]) -> str:
    out: list[str] = []
    for section, values in sections.items():
        out.append(f"[{section}]")
        for key, value in values.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            out.append(f"{key} = {text}")
        out.append("")
    return "\n".join(out)


def _write(path: Path, text: str, mode: int = 0o640) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text, mode=mode)
    return path


def _http_ok(url: str) -> bool:
    """The service answers HTTP (any status below 500 counts: 401 and 300 mean it is up)."""
    try:
        return httpx.get(url, timeout=3, headers={"Connection": "close"}).status_code < 500
    except httpx.HTTPError:
        return False


def _tcp_ok(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=2):
        return True
    return False


def _unix_ok(path: str) -> bool:
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2)
        s.connect(path)
        return True
    return False


def _log_tail(path: Path) -> str:
    """The telling line of a log: its last error if the end has one, else its last line."""
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    errors = [
        ln
        for ln in lines[-300:]
        if any(w in ln for w in (" ERROR ", " CRITICAL ", "Error:", "error:"))
    ]
    line = (errors or lines or ["(empty log)"])[-1]
    return line[:300]


def _sys_run(
    argv: Sequence[str | Path],
    *,
    timeout: float = 300,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command with Debian's PATH first (so Debian's interpreter runs its tools)."""
    t = time.monotonic()
    proc = run(argv, env={"PATH": SYSTEM_PATH, **(env or {})}, timeout=timeout, input=input)
    log.debug("%s (%.1fs)", " ".join(str(a) for a in argv[:4]), time.monotonic() - t)
    return proc


def _connect(clouds_yaml: Path, cloud: str) -> Connection:
    import openstack.config
    import openstack.connection

    region = openstack.config.OpenStackConfig(
        config_files=[str(clouds_yaml)], vendor_files=[]
    ).get_one(cloud=cloud)
    return openstack.connection.Connection(config=region)


# --- processes: each daemon in its own session, recorded by PID ------------------------------


LOG_KEEP_BYTES = 64 << 20


def _pid_file(lay: Layout, name: str) -> Path:
    return lay.run / f"{name}.pid"


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a daemon we started and that died is one)."""
    with contextlib.suppress(ChildProcessError, OSError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False  # it was our child and has just been reaped
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _recorded(lay: Layout, name: str) -> int | None:
    """The PID of ``name`` if it is running as recorded (same start command, not reused)."""
    try:
        record = json.loads(_pid_file(lay, name).read_text())
        pid = int(record["pid"])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError, KeyError):
        return None
    if record.get("marker", "") not in cmdline or not _alive(pid):
        return None
    return pid


# Loaded by every daemon's interpreter (PYTHONPATH=DIR/python). oslo.db opens each SQLite
# transaction with a plain (deferred) BEGIN: it reads, then upgrades to a write lock, and when
# another process wrote meanwhile SQLite fails at once with "database is locked" (no busy
# wait can help a stale snapshot). Measured: 1 of 8 servers created 4 at a time went to ERROR
# that way. BEGIN IMMEDIATE takes the write lock up front, where ?timeout=30 waits properly.
SITECUSTOMIZE = """\
# imagekit test cloud: SQLite transactions take the write lock when they begin.
try:
    import sqlalchemy.event
    from sqlalchemy.engine import Engine
except ImportError:
    pass
else:
    def _begin_immediate(conn, cursor, statement, parameters, context, executemany):
        if statement == "BEGIN" and conn.dialect.name == "sqlite":
            return "BEGIN IMMEDIATE", parameters
        return statement, parameters

    sqlalchemy.event.listen(Engine, "before_cursor_execute", _begin_immediate, retval=True)
"""


def _python_hooks(lay: Layout) -> Path:
    return _write(lay.root / "python" / "sitecustomize.py", SITECUSTOMIZE, mode=0o644).parent


def _start(lay: Layout, daemon: Daemon) -> int:
    if daemon.occupied is not None and daemon.occupied():
        raise TestCloudError(
            f"{daemon.name}: its address on this host is already taken by a "
            "process this cloud did not start (another test cloud?)"
        )
    logfile = lay.log(daemon.name)
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if logfile.stat().st_size > LOG_KEEP_BYTES:  # a cloud reused for weeks: keep one old
            os.replace(logfile, logfile.with_suffix(".log.1"))
    env = child_env(
        {
            "PATH": SYSTEM_PATH,
            "HOME": str(lay.root / "home"),
            "PYTHONPATH": str(_python_hooks(lay)),
            **daemon.env,
        }
    )
    with logfile.open("ab") as out:  # a file, not a pipe: nobody reads a pipe of a daemon
        out.write(
            f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(daemon.argv)}\n".encode()
        )
        out.flush()
        proc = subprocess.Popen(
            daemon.argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=lay.root,
            start_new_session=True,
        )  # its own session: stop the group
    marker = daemon.marker or Path(daemon.argv[0]).name
    _write(_pid_file(lay, daemon.name), json.dumps({"pid": proc.pid, "marker": marker}), mode=0o644)
    return proc.pid


def _wait_ready(lay: Layout, daemon: Daemon, pid: int) -> None:
    deadline = time.monotonic() + daemon.timeout
    while True:
        if not _alive(pid):
            raise TestCloudError(
                f"{daemon.name} exited during start-up; log "
                f"{lay.log(daemon.name)}: {_log_tail(lay.log(daemon.name))}"
            )
        if daemon.ready():
            return
        if time.monotonic() > deadline:
            raise TestCloudError(
                f"{daemon.name} did not come up within {daemon.timeout:.0f}s; "
                f"log {lay.log(daemon.name)}: {_log_tail(lay.log(daemon.name))}"
            )
        time.sleep(0.25)


def _stop_groups(pids: Sequence[int], timeout: float = 30) -> None:
    """SIGTERM each daemon's process group (its workers, rabbit's beam) at once, wait for all
    of them, SIGKILL what lingers after ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p) or _group_alive(p)]
            if not pids:
                return
            time.sleep(0.1)
    raise TestCloudError(f"processes {pids} survived SIGKILL")


def _group(pgid: int) -> list[int]:
    """Live processes of a process group (a daemon and the workers it forked)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(stat.parent.name))
    return pids


def _group_alive(pgid: int) -> bool:
    return bool(_group(pgid))


def _memory_kib(pids: Sequence[int]) -> tuple[int, int]:
    """(RSS, PSS) in KiB summed over ``pids``, from /proc/<pid>/smaps_rollup."""
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                key, _, value = line.partition(":")
                if key == "Rss":
                    rss += int(value.split()[0])
                elif key == "Pss":
                    pss += int(value.split()[0])
    return rss, pss


# --- packages --------------------------------------------------------------------------------


def missing_packages() -> list[str]:
    missing = []
    for package in APT_PACKAGES:
        try:
            out = run(["dpkg-query", "-W", "-f=${Status}", package]).stdout.decode()
        except CommandError:
            out = ""
        if "install ok installed" not in out:
            missing.append(package)
    return missing


def install_packages() -> float:
    """Install Debian's OpenStack packages if any is missing; return the seconds it took.

    Services are not started by the maintainer scripts (policy-rc.d exits 101), debconf is
    pre-seeded so nothing prompts, and ``--no-upgrade`` leaves installed packages alone.
    """
    missing = missing_packages()
    if not missing:
        return 0.0
    if os.geteuid() != 0:
        raise TestCloudError(
            "installing the test cloud's packages needs root: apt-get install " + " ".join(missing)
        )
    started = time.monotonic()
    log.info("installing %d packages (and their dependencies): %s", len(missing), " ".join(missing))
    _sys_run(["debconf-set-selections"], input=DEBCONF.encode())
    ours = not POLICY_RC_D.exists()
    if ours:
        _write(POLICY_RC_D, POLICY_RC_D_TEXT, mode=0o755)
    argv = [
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "--no-upgrade",
        "-o",
        "DPkg::Lock::Timeout=600",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
        *missing,
    ]
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    try:
        try:
            _sys_run(argv, env=env, timeout=1800)
        except CommandError:
            # a fresh machine may have a stale or empty package index
            _sys_run(["apt-get", "update", "-q"], env=env, timeout=600)
            _sys_run(argv, env=env, timeout=1800)
    except CommandError as e:
        raise TestCloudError(f"installing the test cloud's packages failed: {e}") from e
    finally:
        if ours:
            POLICY_RC_D.unlink(missing_ok=True)
    return time.monotonic() - started


# --- one function per service: its config, its database, its daemon ------------------------


def _db(lay: Layout, name: str) -> dict[str, object]:
    # no fsync per commit: shorter write locks; a test cloud's data need not survive a crash
    return {"connection": lay.db(name), "sqlite_synchronous": False}


def _authtoken(user: str) -> dict[str, object]:
    """keystonemiddleware settings: the service validates tokens as its own service user."""
    return {
        "www_authenticate_uri": KEYSTONE_URL,
        "auth_url": KEYSTONE_URL,
        "auth_type": "password",
        "project_domain_name": "Default",
        "user_domain_name": "Default",
        "project_name": "service",
        "username": user,
        "password": SERVICE_PASSWORD,
        "region_name": REGION,
    }


def _service_auth(user: str) -> dict[str, object]:
    """keystoneauth settings for calling another service (nova → glance, neutron, placement);
    it ignores www_authenticate_uri."""
    return {**_authtoken(user), "valid_interfaces": "public"}


def _common(lay: Layout, name: str) -> dict[str, object]:
    # Log files are given per daemon on the command line (nova's four share one config).
    # A test cloud stops in seconds, not after oslo.service's 60 s of grace.
    return {
        "use_stderr": False,
        "debug": False,
        "state_path": lay.root / name,
        "graceful_shutdown_timeout": 5,
    }


def epmd(lay: Layout) -> Daemon:
    # Started by us, not by Erlang on first use: erl would daemonize an epmd bound to every
    # address that no PID file records.
    return Daemon(
        "epmd",
        ["/usr/bin/epmd", "-address", HOST, "-port", "4369"],
        ready=lambda: _tcp_ok(4369),
        timeout=20,
        occupied=lambda: _tcp_ok(4369),
    )


def rabbitmq(lay: Layout) -> Daemon:
    etc = lay.etc / "rabbitmq"
    _write(
        etc / "rabbitmq.conf",
        "\n".join(
            [
                f"listeners.tcp.default = {HOST}:5672",
                "log.console = true",
                "log.console.level = warning",
                "log.file = false",
                "",
            ]
        ),
    )
    _write(etc / "rabbitmq-env.conf", "")
    _write(etc / "enabled_plugins", "[].\n")
    home = lay.root / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "RABBITMQ_CONFIG_FILE": str(etc / "rabbitmq.conf"),
        "RABBITMQ_CONF_ENV_FILE": str(etc / "rabbitmq-env.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(etc / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(lay.root / "rabbitmq" / "mnesia"),
        "RABBITMQ_LOG_BASE": str(lay.logs),
        "RABBITMQ_NODENAME": "imagekit@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": HOST,
        "RABBITMQ_NODE_PORT": "5672",
        "RABBITMQ_DIST_PORT": "25672",
        "RABBITMQ_PID_FILE": str(lay.run / "rabbitmq-beam.pid"),
        # the Erlang distribution listener binds every address unless told otherwise
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        "ERL_EPMD_ADDRESS": HOST,
    }
    # the script itself, not /usr/sbin's wrapper (that one switches to the rabbitmq user)
    return Daemon(
        "rabbitmq",
        ["/usr/lib/rabbitmq/bin/rabbitmq-server"],
        env=env,
        ready=lambda: _tcp_ok(5672),
        timeout=120,
        occupied=lambda: _tcp_ok(5672),
    )


def _libvirt_etc(lay: Layout) -> Path:
    etc = lay.etc / "libvirt"
    _write(
        etc / "libvirtd.conf",
        "\n".join(
            [
                "listen_tls = 0",
                "listen_tcp = 0",
                'unix_sock_group = "root"',
                'unix_sock_rw_perms = "0770"',
                'auth_unix_ro = "none"',
                'auth_unix_rw = "none"',
                'log_outputs = "3:stderr"',
                "",
            ]
        ),
    )
    _write(etc / "virtlogd.conf", 'log_outputs = "3:stderr"\n')
    # No systemd and cgroups shared with the host: run qemu as root without cgroups, without
    # relabelling or chowning images (nova writes them as root), without a private /dev.
    _write(
        etc / "qemu.conf",
        "\n".join(
            [
                'user = "root"',
                'group = "root"',
                "dynamic_ownership = 0",
                "remember_owner = 0",
                'security_driver = "none"',
                "cgroup_controllers = [ ]",
                "namespaces = [ ]",
                "",
            ]
        ),
    )
    return etc


def _in_own_etc_libvirt(lay: Layout, program: str, *args: str) -> list[str]:
    """argv running ``program`` where /etc/libvirt is DIR/etc/libvirt (a private bind mount):
    libvirtd reads qemu.conf only from /etc/libvirt, and the host's copy stays untouched (and
    so does the host's default network, which must not start)."""
    return [
        "/usr/bin/unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
        '/usr/bin/mount --bind "$1" /etc/libvirt && shift && exec "$@"',
        "sh",
        str(_libvirt_etc(lay)),
        program,
        *args,
    ]


def _libvirt_path(lay: Layout) -> str:
    """PATH for libvirtd with x86_64 as the only emulator: at start it probes every
    qemu-system-* it finds, and nova-compute-qemu pulls in all of them (measured: 54 s on the
    first start instead of a few; /bin is /usr/bin on Debian 12, so neither is on it)."""
    bin_dir = lay.root / "libvirt-bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool in ("qemu-system-x86_64", "qemu-img"):
        link = bin_dir / tool
        if not link.is_symlink():
            link.symlink_to(f"/usr/bin/{tool}")
    return f"{bin_dir}:/usr/sbin:/sbin"


VIRTLOGD_SOCK = "/run/libvirt/virtlogd-sock"
LIBVIRT_SOCK = "/run/libvirt/libvirt-sock"


def _virsh_ok() -> bool:
    try:
        _sys_run(["virsh", "-c", "qemu:///system", "version"], timeout=20)
    except CommandError:
        return False
    return True


def virtlogd(lay: Layout) -> Daemon:
    # nova's serial console log (what `console log` shows) is written through virtlogd
    return Daemon(
        "virtlogd",
        _in_own_etc_libvirt(
            lay, "/usr/sbin/virtlogd", "--pid-file", str(lay.run / "virtlogd.own.pid")
        ),
        ready=lambda: _unix_ok(VIRTLOGD_SOCK),
        timeout=20,
        marker="virtlogd",
        occupied=lambda: _unix_ok(VIRTLOGD_SOCK),
    )


def libvirtd(lay: Layout) -> Daemon:
    return Daemon(
        "libvirtd",
        _in_own_etc_libvirt(
            lay, "/usr/sbin/libvirtd", "--pid-file", str(lay.run / "libvirtd.own.pid")
        ),
        env={"PATH": _libvirt_path(lay)},
        ready=_virsh_ok,
        timeout=180,
        marker="libvirtd",
        occupied=lambda: _unix_ok(LIBVIRT_SOCK),
    )


def keystone(lay: Layout) -> Daemon:
    conf = _write(
        lay.etc / "keystone" / "keystone.conf",
        _ini(
            {
                "DEFAULT": {"log_file": lay.log("keystone"), "use_stderr": False},
                "database": _db(lay, "keystone"),
                "token": {"provider": "fernet"},
                "fernet_tokens": {"key_repository": lay.root / "keystone" / "fernet-keys"},
                "fernet_receipts": {"key_repository": lay.root / "keystone" / "fernet-keys"},
                "credential": {"key_repository": lay.root / "keystone" / "credential-keys"},
                # bcrypt's default 12 rounds cost ~0.3 s per password check on these cores
                "identity": {"password_hash_rounds": 4},
                # every API call of every service validates its token here: an in-process cache
                # (one keystone process, so it cannot go stale elsewhere) spares the database
                "cache": {"enabled": True, "backend": "dogpile.cache.memory"},
            }
        ),
    )
    if not lay.done("keystone-db").exists():
        _fresh_db(lay, "keystone", then_redo=("identity",))
        manage = ["keystone-manage", "--config-file", str(conf)]
        _sys_run([*manage, "db_sync"])
        for repo in ("fernet_setup", "credential_setup"):
            _sys_run([*manage, repo, "--keystone-user", "root", "--keystone-group", "root"])
        _sys_run(
            [
                *manage,
                "bootstrap",
                "--bootstrap-password",
                ADMIN_PASSWORD,
                "--bootstrap-username",
                "admin",
                "--bootstrap-project-name",
                "admin",
                "--bootstrap-role-name",
                "admin",
                "--bootstrap-service-name",
                "keystone",
                "--bootstrap-region-id",
                REGION,
                "--bootstrap-admin-url",
                KEYSTONE_URL,
                "--bootstrap-internal-url",
                KEYSTONE_URL,
                "--bootstrap-public-url",
                KEYSTONE_URL,
            ]
        )
        _wal(lay, "keystone")
        _mark(lay, "keystone-db")
    # pbr's wsgiref server: one process, one thread, HTTP/1.0 (it closes every connection,
    # which clients expect, unlike uwsgi's --http-socket that drops kept-alive ones silently)
    return Daemon(
        "keystone",
        ["/usr/bin/keystone-wsgi-public", "--host", HOST, "--port", str(PORTS["keystone"])],
        env={
            "OS_KEYSTONE_CONFIG_DIR": str(conf.parent),
            "OS_KEYSTONE_CONFIG_FILES": "keystone.conf",
        },
        ready=lambda: _http_ok(KEYSTONE_URL),
        timeout=90,
        occupied=lambda: _tcp_ok(PORTS["keystone"]),
    )


def glance(lay: Layout) -> Daemon:
    store = lay.root / "glance"
    conf = _write(
        lay.etc / "glance" / "glance-api.conf",
        _ini(
            {
                "DEFAULT": {
                    **_common(lay, "glance"),
                    "bind_host": HOST,
                    "bind_port": PORTS["glance"],
                    "workers": 1,
                    "enabled_backends": "fs:file",
                    "transport_url": RABBIT_URL,
                },
                "glance_store": {"default_backend": "fs"},
                "fs": {"filesystem_store_datadir": store / "images"},
                "os_glance_staging_store": {"filesystem_store_datadir": store / "staging"},
                "os_glance_tasks_store": {"filesystem_store_datadir": store / "tasks"},
                "database": _db(lay, "glance"),
                "keystone_authtoken": _authtoken("glance"),
                "paste_deploy": {
                    "flavor": "keystone",
                    "config_file": "/etc/glance/glance-api-paste.ini",
                },
                "oslo_concurrency": {"lock_path": lay.root / "lock"},
                "oslo_messaging_notifications": {"driver": "noop"},
            }
        ),
    )
    if not lay.done("glance-db").exists():
        _fresh_db(lay, "glance")
        _sys_run(["glance-manage", "--config-file", str(conf), "db_sync"])
        _wal(lay, "glance")
        _mark(lay, "glance-db")
    return Daemon(
        "glance",
        ["/usr/bin/glance-api", "--config-file", str(conf), "--log-file", str(lay.log("glance"))],
        ready=lambda: _http_ok(f"http://{HOST}:{PORTS['glance']}/"),
        occupied=lambda: _tcp_ok(PORTS["glance"]),
    )


def placement(lay: Layout) -> Daemon:
    conf = _write(
        lay.etc / "placement" / "placement.conf",
        _ini(
            {
                "DEFAULT": {"log_file": lay.log("placement"), "use_stderr": False},
                "placement_database": _db(lay, "placement"),
                "api": {"auth_strategy": "keystone"},
                "keystone_authtoken": _authtoken("placement"),
            }
        ),
    )
    env = {"OS_PLACEMENT_CONFIG_DIR": str(conf.parent)}
    if not lay.done("placement-db").exists():
        _fresh_db(lay, "placement")
        _sys_run(["placement-manage", "--config-file", str(conf), "db", "sync"])
        _wal(lay, "placement")
        _mark(lay, "placement-db")
    return Daemon(
        "placement",
        ["/usr/bin/placement-api", "--host", HOST, "--port", str(PORTS["placement"])],
        env=env,
        ready=lambda: _http_ok(f"http://{HOST}:{PORTS['placement']}/"),
        occupied=lambda: _tcp_ok(PORTS["placement"]),
    )


def _neutron_confs(lay: Layout) -> list[str]:
    conf = _write(
        lay.etc / "neutron" / "neutron.conf",
        _ini(
            {
                "DEFAULT": {
                    **_common(lay, "neutron"),
                    "bind_host": HOST,
                    "bind_port": PORTS["neutron"],
                    "core_plugin": "ml2",
                    "service_plugins": "",
                    "auth_strategy": "keystone",
                    "api_workers": 1,
                    "rpc_workers": 0,
                    "rpc_state_report_workers": 0,
                    "transport_url": RABBIT_URL,
                    "api_paste_config": "/etc/neutron/api-paste.ini",
                    # no agents and no nova notifications: servers here have no ports
                    "notify_nova_on_port_status_changes": False,
                    "notify_nova_on_port_data_changes": False,
                },
                "database": _db(lay, "neutron"),
                "keystone_authtoken": _authtoken("neutron"),
                "oslo_concurrency": {"lock_path": lay.root / "lock"},
                "oslo_messaging_notifications": {"driver": "noop"},
            }
        ),
    )
    # ML2 with the flat type driver and no mechanism drivers: enough for nova's port and
    # security-group queries on servers created with networks="none"
    ml2 = _write(
        lay.etc / "neutron" / "ml2_conf.ini",
        _ini(
            {
                "ml2": {
                    "type_drivers": "flat",
                    "tenant_network_types": "",
                    "mechanism_drivers": "",
                    "extension_drivers": "port_security",
                },
                "ml2_type_flat": {"flat_networks": "*"},
            }
        ),
    )
    return ["--config-file", str(conf), "--config-file", str(ml2)]


# Neutron's migrations fail on SQLite ("No support for ALTER of constraints"): create the
# tables from its models, as its own unit tests do, then stamp the migration heads.
_NEUTRON_CREATE_TABLES = """
import sys
import sqlalchemy
from neutron.db.migration.models import head
head.get_metadata().create_all(sqlalchemy.create_engine(sys.argv[1]))
"""


def neutron(lay: Layout) -> Daemon:
    confs = _neutron_confs(lay)
    if not lay.done("neutron-db").exists():
        _fresh_db(lay, "neutron")
        _sys_run([SYSTEM_PYTHON, "-c", _NEUTRON_CREATE_TABLES, lay.db("neutron")])
        _sys_run(["neutron-db-manage", *confs, "stamp", "heads"])
        _wal(lay, "neutron")
        _mark(lay, "neutron-db")
    return Daemon(
        "neutron",
        ["/usr/bin/neutron-server", *confs, "--log-file", str(lay.log("neutron"))],
        ready=lambda: _http_ok(f"http://{HOST}:{PORTS['neutron']}/"),
        occupied=lambda: _tcp_ok(PORTS["neutron"]),
    )


def _nova_sections(lay: Layout, *, with_db: bool) -> dict[str, dict[str, object]]:
    sections: dict[str, dict[str, object]] = {
        "DEFAULT": {
            **_common(lay, "nova"),
            "host": "imagekit-testcloud",
            "my_ip": HOST,
            "transport_url": RABBIT_URL,
            "enabled_apis": "osapi_compute",
            "osapi_compute_listen": HOST,
            "osapi_compute_listen_port": PORTS["nova"],
            "osapi_compute_workers": 1,
            "compute_driver": "libvirt.LibvirtDriver",
            "instances_path": lay.root / "nova" / "instances",
            "reserved_host_memory_mb": 512,
            "cpu_allocation_ratio": 8.0,
        },
        "api": {"auth_strategy": "keystone"},
        "wsgi": {"api_paste_config": "/etc/nova/api-paste.ini"},
        "conductor": {"workers": 1},
        "scheduler": {"workers": 1, "discover_hosts_in_cells_interval": -1},
        "keystone_authtoken": _authtoken("nova"),
        "service_user": {**_service_auth("nova"), "send_service_user_token": True},
        "glance": _service_auth("nova"),
        "placement": _service_auth("placement"),
        "neutron": {**_service_auth("neutron"), "service_metadata_proxy": False},
        # TCG: /dev/kvm exists on these hosts but guests hang under it
        "libvirt": {
            "virt_type": "qemu",
            "cpu_mode": "none",
            "connection_uri": "qemu:///system",
            "sysinfo_serial": "none",
        },
        "vnc": {"enabled": False},
        "spice": {"enabled": False},
        "serial_console": {"enabled": False},
        "oslo_concurrency": {"lock_path": lay.root / "lock"},
        "oslo_messaging_notifications": {"driver": "noop"},
    }
    if with_db:
        sections["api_database"] = _db(lay, "nova_api")
        sections["database"] = _db(lay, "nova")
    return sections


def _nova_conf(lay: Layout) -> Path:
    return _write(lay.etc / "nova" / "nova.conf", _ini(_nova_sections(lay, with_db=True)))


def _nova_sync(lay: Layout, conf: Path) -> None:
    if lay.done("nova-db").exists():
        return
    _fresh_db(lay, "nova_api", "nova_cell0", "nova")
    manage = ["nova-manage", "--config-file", str(conf)]
    _sys_run([*manage, "api_db", "sync"])
    _wal(lay, "nova_api")
    _sys_run([*manage, "cell_v2", "map_cell0", "--database_connection", lay.db("nova_cell0")])
    _sys_run(
        [
            *manage,
            "cell_v2",
            "create_cell",
            "--name",
            "cell1",
            "--database_connection",
            lay.db("nova"),
            "--transport-url",
            RABBIT_URL,
        ]
    )
    _sys_run([*manage, "db", "sync"])  # cell0 and cell1
    for db in ("nova_api", "nova_cell0", "nova"):
        _wal(lay, db)
    _mark(lay, "nova-db")


def nova_api(lay: Layout) -> Daemon:
    conf = _nova_conf(lay)
    _nova_sync(lay, conf)
    return Daemon(
        "nova-api",
        ["/usr/bin/nova-api", "--config-file", str(conf), "--log-file", str(lay.log("nova-api"))],
        ready=lambda: _http_ok(f"http://{HOST}:{PORTS['nova']}/"),
        occupied=lambda: _tcp_ok(PORTS["nova"]),
    )


def _nova_service(
    lay: Layout,
    name: str,
    conf: Path,
    conn: Callable[[], Connection],
    *,
    fresh: bool = False,
    timeout: float = 120,
) -> Daemon:
    daemon = Daemon(
        name,
        [f"/usr/bin/{name}", "--config-file", str(conf), "--log-file", str(lay.log(name))],
        ready=lambda: False,
        timeout=timeout,
    )
    daemon.ready = lambda: _nova_service_up(conn, name, daemon.started_at if fresh else None)
    return daemon


def nova_conductor(lay: Layout, conn: Callable[[], Connection]) -> Daemon:
    return _nova_service(lay, "nova-conductor", _nova_conf(lay), conn)


def nova_scheduler(lay: Layout, conn: Callable[[], Connection]) -> Daemon:
    return _nova_service(lay, "nova-scheduler", _nova_conf(lay), conn)


def nova_compute(lay: Layout, conn: Callable[[], Connection]) -> Daemon:
    # nova-compute refuses a config with database lines ("No DB access allowed in
    # nova-compute"): it gets its own file without them.
    conf = _write(lay.etc / "nova" / "nova-compute.conf", _ini(_nova_sections(lay, with_db=False)))
    (lay.root / "nova" / "instances").mkdir(parents=True, exist_ok=True)
    # the scheduler's ComputeFilter wants a heartbeat of this very process (see below);
    # conductor's and scheduler's RPC requests wait in their queues meanwhile
    return _nova_service(lay, "nova-compute", conf, conn, fresh=True, timeout=180)


def _nova_service_up(
    conn: Callable[[], Connection], binary: str, since: dt.datetime | None
) -> bool:
    """The service reports "up" from a heartbeat of this process: after a restart within
    nova's 60 s service_down_time the API still says "up" from the previous process's last
    heartbeat, and the scheduler's ComputeFilter refuses the host a few seconds later."""
    try:
        services = [s for s in conn().compute.services() if s.binary == binary and s.state == "up"]
    except Exception:  # the API answering is part of what is being waited for
        return False
    if since is None:
        return bool(services)
    # no heartbeat at all yet: a record this process has just created
    return any(
        not s.updated_at or dt.datetime.fromisoformat(s.updated_at).replace(tzinfo=dt.UTC) >= since
        for s in services
    )


def _wal(lay: Layout, db: str) -> None:
    """WAL journal on a synced database: readers no longer block the one writer."""
    with contextlib.closing(sqlite3.connect(lay.data / f"{db}.sqlite", timeout=30)) as con:
        con.execute("PRAGMA journal_mode=WAL")


def _fresh_db(lay: Layout, *dbs: str, then_redo: tuple[str, ...] = ()) -> None:
    """Start a database sync from empty files: an interrupted earlier sync (no done-marker)
    must not leave half a schema behind, nor the steps that wrote into it marked done."""
    for db in dbs:
        for suffix in ("", "-wal", "-shm"):
            (lay.data / f"{db}.sqlite{suffix}").unlink(missing_ok=True)
    for step in then_redo:
        lay.done(step).unlink(missing_ok=True)


def _mark(lay: Layout, step: str) -> None:
    _write(lay.done(step), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")


# --- identity, catalog, flavors, client configuration ---------------------------------------


def _write_clouds_yaml(lay: Layout) -> Path:
    def cloud(user: str, password: str, project: str) -> dict[str, Any]:
        return {
            "auth": {
                "auth_url": KEYSTONE_URL,
                "username": user,
                "password": password,
                "project_name": project,
                "user_domain_name": "Default",
                "project_domain_name": "Default",
            },
            "region_name": REGION,
            "interface": "public",
            "identity_api_version": 3,
        }

    data = {
        "clouds": {
            CLOUD: cloud("admin", ADMIN_PASSWORD, "admin"),
            DEMO_CLOUD: cloud("demo", DEMO_PASSWORD, "demo"),
        }
    }
    return _write(lay.clouds_yaml, yaml.safe_dump(data, sort_keys=False), mode=0o644)


def _identity(conn: Connection) -> None:
    """Service users and endpoints (keystone-manage bootstrap made admin and identity)."""
    ident = cast("IdentityV3", conn.identity)
    admin_role = ident.find_role("admin", ignore_missing=False)
    member_role = ident.find_role("member", ignore_missing=False)
    service_project = ident.find_project("service") or ident.create_project(
        name="service", domain_id="default"
    )
    for name in ("glance", "nova", "neutron", "placement"):
        user = ident.find_user(name) or ident.create_user(
            name=name, password=SERVICE_PASSWORD, domain_id="default"
        )
        ident.assign_project_role_to_user(service_project, user, admin_role)
    catalog = (
        ("glance", "image", f"http://{HOST}:{PORTS['glance']}"),
        ("placement", "placement", f"http://{HOST}:{PORTS['placement']}"),
        ("nova", "compute", f"http://{HOST}:{PORTS['nova']}/v2.1"),
        ("neutron", "network", f"http://{HOST}:{PORTS['neutron']}"),
    )
    for name, kind, url in catalog:
        svc = ident.find_service(name) or ident.create_service(name=name, type=kind)
        have = {e.interface for e in ident.endpoints(service_id=svc.id)}
        for interface in ("public", "internal"):
            if interface not in have:
                ident.create_endpoint(
                    service_id=svc.id, interface=interface, url=url, region_id=REGION
                )
    demo = ident.find_project("demo") or ident.create_project(name="demo", domain_id="default")
    demo_user = ident.find_user("demo") or ident.create_user(
        name="demo", password=DEMO_PASSWORD, domain_id="default", default_project_id=demo.id
    )
    ident.assign_project_role_to_user(demo, demo_user, member_role)


def _flavors(conn: Connection) -> None:
    have = {f.name for f in conn.compute.flavors(is_public=None)}
    for name, flavor_id, ram, vcpus, disk in FLAVORS:
        if name not in have:
            conn.compute.create_flavor(name=name, id=flavor_id, ram=ram, vcpus=vcpus, disk=disk)


def _neutron_first_query(conn: Callable[[], Connection]) -> Callable[[], bool]:
    """Neutron's first query after a start can fail with "type object 'Port' has no attribute
    'port_forwardings'" (SQLAlchemy mappers not yet configured when no service plugins are
    loaded), and every nova boot then fails: one network list, then wait for port list."""
    tried: list[bool] = []

    def ready() -> bool:
        if not _http_ok(f"http://{HOST}:{PORTS['neutron']}/"):
            return False
        try:
            if not tried:
                tried.append(True)
                with contextlib.suppress(Exception):
                    list(conn().network.networks())
            list(conn().network.ports())
            return True
        except Exception:
            return False

    return ready


def _compute_host_ready(lay: Layout, conf: Path, conn: Callable[[], Connection]) -> None:
    """Map the compute host into cell1 and wait until placement has its inventory."""
    deadline = time.monotonic() + 120
    while True:
        _sys_run(["nova-manage", "--config-file", str(conf), "cell_v2", "discover_hosts"])
        with contextlib.suppress(Exception):
            c = conn()
            if list(c.compute.hypervisors()) and any(
                list(c.placement.resource_provider_inventories(rp))
                for rp in c.placement.resource_providers()
            ):
                return
        if time.monotonic() > deadline:
            raise TestCloudError(
                "nova-compute registered no hypervisor with inventory within "
                f"120s; log {lay.log('nova-compute')}: "
                f"{_log_tail(lay.log('nova-compute'))}"
            )
        time.sleep(1)


# --- up, down, status ------------------------------------------------------------------------

SERVICES = (
    "epmd",
    "rabbitmq",
    "virtlogd",
    "libvirtd",
    "keystone",
    "glance",
    "placement",
    "neutron",
    "nova-api",
    "nova-conductor",
    "nova-scheduler",
    "nova-compute",
)


@contextlib.contextmanager
def _step(what: str) -> Iterator[None]:
    """Name the step in the one-line error when a command or an API call inside it fails."""
    try:
        yield
    except TestCloudError:
        raise
    except Exception as e:  # commands, OS errors and every openstacksdk exception alike
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TestCloudError(f"{what} failed: {first}") from e


@contextlib.contextmanager
def _locked(lay: Layout) -> Iterator[None]:
    """One up/down at a time per directory (parallel test sessions share the cloud)."""
    lay.root.mkdir(parents=True, exist_ok=True)
    with open(lay.root / ".lock", "w") as fp:
        fcntl.flock(fp, fcntl.LOCK_EX)
        yield


def status(directory: Path = DEFAULT_DIR) -> dict[str, int | None]:
    """PID of every service as recorded and still running (None: not running)."""
    lay = Layout(Path(directory))
    return {name: _recorded(lay, name) for name in SERVICES}


def memory(directory: Path = DEFAULT_DIR) -> dict[str, tuple[int, int, int]]:
    """(processes, RSS KiB, PSS KiB) of every running service (guests not included)."""
    out = {}
    for name, pid in status(directory).items():
        if pid is not None:
            pids = _group(pid)
            out[name] = (len(pids), *_memory_kib(pids))
    return out


def _running(lay: Layout) -> RunningCloud | None:
    if not lay.done("ready").exists() or not lay.clouds_yaml.exists():
        return None
    if any(pid is None for pid in status(lay.root).values()):
        return None
    # every API answers (a few ms each); otherwise the slow path says which one does not
    if not all(
        _http_ok(url)
        for url in (
            KEYSTONE_URL,
            *(f"http://{HOST}:{PORTS[s]}/" for s in ("glance", "placement", "nova", "neutron")),
        )
    ):
        return None
    return RunningCloud(lay.root, lay.clouds_yaml)


def up(directory: Path = DEFAULT_DIR, *, install: bool = True) -> RunningCloud:
    """Install (if missing), configure, start and wait for the cloud; quick if it runs.

    Raises:
        TestCloudError: a package, a database or a service failed; the message names it and
            gives the last line of its log.
    """
    lay = Layout(Path(directory).resolve())
    with _locked(lay):
        cloud = _running(lay)
        if cloud is not None:
            return cloud
        timings: dict[str, float] = {}
        if install:
            timings["install"] = install_packages()
        elif missing_packages():
            raise TestCloudError("test cloud packages missing: " + " ".join(missing_packages()))
        if os.geteuid() != 0:
            raise TestCloudError("the test cloud runs as root (libvirt, nova's privsep)")
        started = time.monotonic()
        for d in (
            lay.etc,
            lay.data,
            lay.logs,
            lay.run,
            lay.state,
            lay.root / "lock",
            lay.root / "home",
        ):
            d.mkdir(parents=True, exist_ok=True)
        lay.done("ready").unlink(missing_ok=True)
        clouds_yaml = _write_clouds_yaml(lay)
        admin: list[Connection] = []

        def conn() -> Connection:
            if not admin:
                admin.append(_connect(clouds_yaml, CLOUD))
            return admin[0]

        def start(*daemons: Daemon) -> None:
            """Start those not running, then wait for each (start-ups overlap)."""
            pids = {d.name: _recorded(lay, d.name) for d in daemons}
            for d in daemons:
                if pids[d.name] is None:
                    d.started_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
                    pids[d.name] = _start(lay, d)
                    log.info("started %s (pid %s)", d.name, pids[d.name])
            for d in daemons:
                t = time.monotonic()
                pid = pids[d.name]
                assert pid is not None
                _wait_ready(lay, d, pid)
                log.info("%s ready (%.1fs)", d.name, time.monotonic() - t)

        start(epmd(lay))
        with _step("keystone database set-up"):
            keystone_daemon = keystone(lay)
        start(rabbitmq(lay), virtlogd(lay), keystone_daemon)
        if not lay.done("identity").exists():
            with _step("creating service users, endpoints and the demo project"):
                _identity(conn())
            _mark(lay, "identity")
            admin.clear()  # its token's catalog predates the endpoints just made
        with _step("glance database set-up"):
            glance_daemon = glance(lay)
        with _step("placement database set-up"):
            placement_daemon = placement(lay)
        with _step("neutron database set-up"):
            neutron_daemon = neutron(lay)
        neutron_daemon.ready = _neutron_first_query(conn)
        with _step("nova database set-up"):
            nova_api_daemon = nova_api(lay)
        start(libvirtd(lay), glance_daemon, placement_daemon, neutron_daemon, nova_api_daemon)
        with _step("creating flavors"):
            _flavors(conn())  # the missing ones only
        start(nova_conductor(lay, conn), nova_scheduler(lay, conn), nova_compute(lay, conn))
        with _step("mapping the compute host"):
            _compute_host_ready(lay, lay.etc / "nova" / "nova.conf", conn)
        timings["configure_and_start"] = time.monotonic() - started
        with (lay.logs / "up-times.jsonl").open("a") as fp:  # one line per real start
            fp.write(
                json.dumps(
                    {
                        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        **{k: round(v, 1) for k, v in timings.items()},
                    }
                )
                + "\n"
            )
        _mark(lay, "ready")
        log.info(
            "test cloud up in %.1fs: OS_CLIENT_CONFIG_FILE=%s OS_CLOUD=%s",
            timings["configure_and_start"],
            clouds_yaml,
            CLOUD,
        )
        return RunningCloud(lay.root, clouds_yaml)


def _destroy_guests() -> None:
    """Guests are children of libvirtd's world, not of any recorded PID: stop them first."""
    try:
        names = (
            _sys_run(["virsh", "-c", "qemu:///system", "list", "--name"], timeout=20)
            .stdout.decode()
            .split()
        )
    except CommandError:
        return
    for name in names:
        with contextlib.suppress(CommandError):
            _sys_run(["virsh", "-c", "qemu:///system", "destroy", name], timeout=30)


def down(directory: Path = DEFAULT_DIR) -> list[str]:
    """Stop every recorded daemon (guests first) and wait; return the names stopped."""
    lay = Layout(Path(directory).resolve())
    stopped: list[str] = []
    with _locked(lay):
        lay.done("ready").unlink(missing_ok=True)
        if _recorded(lay, "libvirtd") is not None:
            _destroy_guests()
        running = {name: _recorded(lay, name) for name in reversed(SERVICES)}
        pids = [pid for pid in running.values() if pid is not None]
        t = time.monotonic()
        _stop_groups(pids)
        log.info("stopped %d daemons in %.1fs", len(pids), time.monotonic() - t)
        for name, pid in running.items():
            _pid_file(lay, name).unlink(missing_ok=True)
            if pid is not None:
                stopped.append(name)
    return stopped


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imagekit.devtools.testcloud", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DIR,
        help=f"where the cloud lives (default {DEFAULT_DIR})",
    )
    parser.add_argument(
        "--no-install", action="store_true", help="fail instead of installing missing packages"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="testcloud: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        if args.command == "up":
            t = time.monotonic()
            cloud = up(args.dir, install=not args.no_install)
            print(
                f"export OS_CLIENT_CONFIG_FILE={cloud.clouds_yaml} OS_CLOUD={cloud.cloud}"
                f"  # up in {time.monotonic() - t:.1f}s"
            )
        elif args.command == "down":
            print("stopped: " + (" ".join(down(args.dir)) or "nothing was running"))
        else:
            pids = status(args.dir)
            mem = memory(args.dir)
            total = [0, 0, 0]
            for name, pid in pids.items():
                if pid is None:
                    print(f"{name:15} stopped")
                    continue
                n, rss, pss = mem.get(name, (0, 0, 0))
                total = [total[0] + n, total[1] + rss, total[2] + pss]
                print(
                    f"{name:15} running pid {pid:<8} {n:2} proc  RSS {rss // 1024:5} MiB"
                    f"  PSS {pss // 1024:5} MiB"
                )
            print(
                f"{'all':15} {'':21}{total[0]:2} proc  RSS {total[1] // 1024:5} MiB  "
                f"PSS {total[2] // 1024:5} MiB"
            )
            return 0 if all(pids.values()) else 3
    except TestCloudError as e:
        print(f"testcloud: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
