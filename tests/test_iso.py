"""ISO 9660 data disks: written by imagekit and read back by xorriso/isoinfo, and the reverse."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pycdlib
import pytest

from imagekit.isofs import (
    DEFAULT_EPOCH,
    IsoError,
    check_label,
    extract_iso,
    list_iso,
    list_iso_fp,
    make_iso,
    read_label,
    write_iso,
    write_iso_files,
)

pytestmark = pytest.mark.skipif(shutil.which("xorriso") is None, reason="needs xorriso")


def xorriso_list(iso: Path) -> dict[str, tuple[str, int]]:
    """path -> (mode string, size) as xorriso reads the image (Rock Ridge)."""
    out = subprocess.run(
        ["xorriso", "-indev", str(iso), "-find", "/", "-exec", "lsdl"],
        capture_output=True,
        check=True,
    ).stdout.decode("utf-8", "surrogateescape")
    result = {}
    for line in out.splitlines():
        fields = line.split(None, 8)
        if len(fields) < 9:
            continue
        name = fields[8]
        if " -> " in name:
            name = name.split(" -> ")[0]
        result[name.strip("'")] = (fields[0], int(fields[4]))
    return result


def xorriso_extract(iso: Path, dest: Path) -> None:
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(dest)],
        capture_output=True,
        check=True,
    )


def isoinfo(*args: str) -> str:
    return subprocess.run(["isoinfo", *args], capture_output=True, check=True).stdout.decode(
        "latin-1"
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "flora-and-fauna"
    (src / "animals").mkdir(parents=True)
    (src / "animals" / "dog.txt").write_text("woof\n")
    (src / "animals" / "Dog.TXT").write_text("WOOF\n")
    (src / "plants" / "empty").mkdir(parents=True)
    (src / "secret.key").write_bytes(b"k" * 3000)
    (src / "secret.key").chmod(0o600)
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    (src / "link").symlink_to("animals/dog.txt")
    deep = src.joinpath(*[f"level{i}" for i in range(10)])
    deep.mkdir(parents=True)
    (deep / "bottom.txt").write_text("deep\n")
    (src / ("long " * 30 + ".txt")).write_text("long\n")
    (src / "ümlaut ñ?*:.md").write_text("unicode\n")
    (src / os.fsdecode(b"raw\xffbyte")).write_text("bytes\n")
    return src


def test_round_trip_read_by_xorriso(tree: Path, tmp_path: Path) -> None:
    iso = make_iso(tree, tmp_path / "flora.iso", label="flora")
    listing = xorriso_list(iso)
    assert listing["/animals/dog.txt"] == ("-rw-r--r--", 5)
    assert listing["/animals/Dog.TXT"] == ("-rw-r--r--", 5)
    assert listing["/secret.key"] == ("-rw-------", 3000)
    assert listing["/run.sh"][0] == "-rwxr-xr-x"
    assert listing["/link"][0].startswith("l")
    assert listing["/plants/empty"][0].startswith("d")
    assert (
        "/level0/level1/level2/level3/level4/level5/level6/level7/level8/level9/bottom.txt"
        in listing
    )
    out = tmp_path / "xorriso-out"
    xorriso_extract(iso, out)
    for path in tree.rglob("*"):
        twin = out / path.relative_to(tree)
        if path.is_symlink():
            assert os.readlink(twin) == os.readlink(path)
        elif path.is_file():
            assert twin.read_bytes() == path.read_bytes(), path
            assert (twin.stat().st_mode & 0o777) == (path.stat().st_mode & 0o777)
        else:
            assert twin.is_dir()
    # deep trees get a Rock Ridge relocation directory at the root, as with genisoimage
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.name != "rr_moved") == sorted(
        p.relative_to(tree) for p in tree.rglob("*")
    )


def test_label_and_rock_ridge_joliet_seen_by_isoinfo(tree: Path, tmp_path: Path) -> None:
    iso = make_iso(tree, tmp_path / "flora.iso", label="flora_1")
    info = isoinfo("-d", "-i", str(iso))
    assert "Volume id: FLORA_1" in info
    assert "Joliet" in info
    assert "Rock Ridge" in info
    with open(iso, "rb") as fp:
        assert read_label(fp) == "FLORA_1"


def test_iso9660_and_joliet_names_are_unique_and_legal(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    names = [
        "a.txt",
        "A.TXT",
        "a?txt",
        "a_txt",
        "a-txt",
        "A.txt.",
        "x" * 40 + ".txt",
        "x" * 40 + ".txt2",
        "Same",
        "same",
        "SAME.",
        ".hidden",
        "..dots",
    ]
    for n in names:
        (src / n).write_text(n)
    iso = make_iso(src, tmp_path / "n.iso", label="N")
    plain = [
        ln.rsplit(None, 1)[-1]
        for ln in isoinfo("-l", "-i", str(iso)).splitlines()
        if ln.startswith("-")
    ]
    assert len(plain) == len(set(plain)) == len(names)
    for ident in plain:
        name = ident.split(";")[0]
        assert all(c.isupper() or c.isdigit() or c in "_." for c in name), ident
        assert len(name) <= 31
    joliet = isoinfo("-J", "-l", "-i", str(iso)).splitlines()
    joliet_names = [ln.split("]", 1)[1].strip() for ln in joliet if ln.startswith("-")]
    assert len({n.casefold() for n in joliet_names}) == len(names)
    # Rock Ridge keeps every exact name
    assert {m.path for m in list_iso(iso)} == set(names)


def test_same_tree_gives_same_bytes(tmp_path: Path) -> None:
    def build(root: Path, order: list[str], mtime: int) -> bytes:
        root.mkdir()
        for name in order:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(name)
            os.utime(root / name, (mtime, mtime))
        (root / "empty").mkdir()
        buf = io.BytesIO()
        write_iso(root, buf, label="REPRO")
        return buf.getvalue()

    names = ["b/2.txt", "a.txt", "b/1.txt", "c/d/e.txt"]
    first = build(tmp_path / "one", names, 1_000_000)
    second = build(tmp_path / "two", list(reversed(names)), 2_000_000_000)
    assert first == second
    os.environ["SOURCE_DATE_EPOCH"] = str(DEFAULT_EPOCH + 86400)
    try:
        buf = io.BytesIO()
        write_iso(tmp_path / "one", buf, label="REPRO")
    finally:
        del os.environ["SOURCE_DATE_EPOCH"]
    assert buf.getvalue() != first  # the dates really come from SOURCE_DATE_EPOCH


@pytest.mark.parametrize(
    ("label", "joliet", "expected"),
    [
        ("flora", True, "FLORA"),
        ("CDROM_2024", True, "CDROM_2024"),
        ("A" * 16, True, "A" * 16),
        ("A" * 32, False, "A" * 32),
    ],
    ids=["upper-cased", "digits-underscore", "16-with-joliet", "32-without-joliet"],
)
def test_label_accepted(label: str, joliet: bool, expected: str) -> None:
    assert check_label(label, joliet=joliet) == expected


@pytest.mark.parametrize(
    ("label", "joliet", "message"),
    [
        ("", True, "empty volume label"),
        ("my-disk", True, "only A-Z, 0-9 and _"),
        ("my disk", True, "only A-Z, 0-9 and _"),
        ("ÉTÉ", True, "only A-Z, 0-9 and _"),
        ("A" * 17, True, "at most 16 with Joliet"),
        ("A" * 33, False, "at most 32 without Joliet"),
    ],
    ids=["empty", "hyphen", "space", "non-ascii", "17-with-joliet", "33-without-joliet"],
)
def test_label_refused(label: str, joliet: bool, message: str, tmp_path: Path) -> None:
    with pytest.raises(IsoError, match=message):
        check_label(label, joliet=joliet)
    (tmp_path / "src").mkdir()
    with pytest.raises(IsoError):
        make_iso(tmp_path / "src", tmp_path / "out.iso", label=label, joliet=joliet)
    assert not (tmp_path / "out.iso").exists()
    assert list(tmp_path.glob(".out.iso*")) == []


def test_no_joliet_long_label(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("f")
    iso = make_iso(tmp_path / "src", tmp_path / "o.iso", label="L" * 32, joliet=False)
    info = isoinfo("-d", "-i", str(iso))
    assert f"Volume id: {'L' * 32}" in info
    assert "NO Joliet present" in info


def test_special_file_refused_and_no_output(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "pipe")
    with pytest.raises(IsoError, match="special file"):
        make_iso(src, tmp_path / "o.iso", label="X")
    assert not (tmp_path / "o.iso").exists()


def test_progress_and_hash_while_writing(tree: Path, tmp_path: Path) -> None:
    seen: list[int] = []
    sha = hashlib.sha256()
    iso = make_iso(tree, tmp_path / "o.iso", label="P", progress=seen.append, sink=sha.update)
    assert sum(seen) == iso.stat().st_size
    assert sha.hexdigest() == hashlib.sha256(iso.read_bytes()).hexdigest()


def test_list_and_extract_own_iso(tree: Path, tmp_path: Path) -> None:
    iso = make_iso(tree, tmp_path / "o.iso", label="L")
    members = {m.path: m for m in list_iso(iso)}
    assert members["animals/dog.txt"].size == 5
    assert members["secret.key"].mode == 0o600
    assert members["link"].kind == "symlink"
    assert members["link"].target == "animals/dog.txt"
    assert members["plants/empty"].kind == "dir"
    assert not any(p.startswith("rr_moved") for p in members)
    out = tmp_path / "out"
    extract_iso(iso, out)
    for path in tree.rglob("*"):
        twin = out / path.relative_to(tree)
        if path.is_file() and not path.is_symlink():
            assert twin.read_bytes() == path.read_bytes()
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == sorted(
        p.relative_to(tree) for p in tree.rglob("*")
    )


@pytest.mark.parametrize(
    "flags",
    [["-R", "-J"], ["-J"], ["-R"], []],
    ids=["rock-ridge-joliet", "joliet-only", "rock-ridge-only", "plain"],
)
def test_reads_genisoimage_iso(flags: list[str], tmp_path: Path) -> None:
    if shutil.which("genisoimage") is None:
        pytest.skip("needs genisoimage")
    src = tmp_path / "src"
    (src / "animals").mkdir(parents=True)
    (src / "animals" / "dog.txt").write_text("woof\n")
    (src / "readme").write_text("hello\n")
    (src / "empty").mkdir()
    iso = tmp_path / "g.iso"
    subprocess.run(
        ["genisoimage", "-quiet", *flags, "-V", "GENISO", "-o", str(iso), str(src)], check=True
    )
    names = {m.path.lower() for m in list_iso(iso)}
    assert {"animals", "animals/dog.txt", "readme", "empty"} <= names
    out = tmp_path / "out"
    extract_iso(iso, out)
    dog = next(p for p in out.rglob("*") if p.name.lower() == "dog.txt")
    assert dog.read_text() == "woof\n"
    with open(iso, "rb") as fp:
        assert read_label(fp) == "GENISO"


def _crafted(tmp_path: Path, build) -> Path:  # type: ignore[no-untyped-def]
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, rock_ridge="1.09", vol_ident="EVIL")
    build(iso)
    path = tmp_path / "evil.iso"
    iso.write(str(path))
    iso.close()
    return path


def test_extract_refuses_dotdot_name(tmp_path: Path) -> None:
    def build(iso: pycdlib.PyCdlib) -> None:
        iso.add_fp(io.BytesIO(b"pwned"), 5, "/EVIL.;1", rr_name="..")

    evil = _crafted(tmp_path, build)
    with pytest.raises(IsoError, match="unsafe name"):
        extract_iso(evil, tmp_path / "out")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "target",
    ["/etc/passwd", "../../outside", "a/../../x"],
    ids=["absolute", "climbs-out", "climbs-out-late"],
)
def test_extract_refuses_escaping_symlink(target: str, tmp_path: Path) -> None:
    def build(iso: pycdlib.PyCdlib) -> None:
        iso.add_directory("/D", rr_name="d")
        iso.add_symlink("/D/L.;1", rr_symlink_name="l", rr_path=target)

    evil = _crafted(tmp_path, build)
    with pytest.raises(IsoError, match="refusing symlink"):
        extract_iso(evil, tmp_path / "out")


def test_extract_never_writes_through_a_symlink(tmp_path: Path) -> None:
    # 'd' is a symlink to a directory, then a file 'd/x' comes from another record with the
    # same Rock Ridge name: creating it must not follow the link.
    def build(iso: pycdlib.PyCdlib) -> None:
        iso.add_symlink("/A.;1", rr_symlink_name="d", rr_path=".")
        iso.add_directory("/B", rr_name="d")
        iso.add_fp(io.BytesIO(b"x"), 1, "/B/X.;1", rr_name="x")

    evil = _crafted(tmp_path, build)
    with pytest.raises(IsoError):
        extract_iso(evil, tmp_path / "out")
    assert not (tmp_path / "out" / "x").exists()


def test_extract_into_non_empty_directory_refused(tree: Path, tmp_path: Path) -> None:
    iso = make_iso(tree, tmp_path / "o.iso", label="L")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "f").write_text("keep")
    with pytest.raises(IsoError, match="not empty"):
        extract_iso(iso, tmp_path / "busy")


def test_not_an_iso(tmp_path: Path) -> None:
    junk = tmp_path / "junk.iso"
    junk.write_bytes(b"\0" * 65536)
    with pytest.raises(IsoError):
        list_iso(junk)
    with open(junk, "rb") as fp, pytest.raises(IsoError, match="not an ISO"):
        read_label(fp)


def test_in_memory_tree_with_exact_label(tmp_path: Path) -> None:
    buf = io.BytesIO()
    write_iso_files(
        {"meta-data": b"instance-id: x\n", "a/b/c.txt": b"c"}, buf, label="cidata", exact_label=True
    )
    buf.seek(0)
    assert read_label(buf) == "cidata"
    members = {m.path: m for m in list_iso_fp(buf)}
    assert members["a/b/c.txt"].size == 1
    assert members["a"].kind == "dir"


@pytest.mark.slow
def test_file_of_4_5_gib_multi_extent(tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.mkdir()
    size = 4608 << 20  # 4.5 GiB: more than one 4 GiB extent
    with open(src / "huge.bin", "wb") as fp:
        fp.truncate(size - 4)
        fp.seek(size - 4)
        fp.write(b"tail")
    (src / "after.txt").write_text("after\n")
    iso = make_iso(src, tmp_path / "big.iso", label="BIG")
    listing = xorriso_list(iso)
    assert listing["/huge.bin"][1] == size
    assert listing["/after.txt"][1] == 6
    members = {m.path: m for m in list_iso(iso)}
    assert members["huge.bin"].size == size
    out = tmp_path / "tail.bin"
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/after.txt", str(out)],
        check=True,
        capture_output=True,
    )
    assert out.read_text() == "after\n"
    extracted = tmp_path / "ex"
    extract_iso(iso, extracted)
    assert (extracted / "huge.bin").stat().st_size == size
    with open(extracted / "huge.bin", "rb") as fp:
        fp.seek(size - 4)
        assert fp.read() == b"tail"


@pytest.mark.parametrize("joliet", [True, False], ids=["joliet", "no-joliet"])
def test_fast_path_writes_what_pycdlib_add_file_writes(
    tree: Path, joliet: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import imagekit.isofs.writer as iso_module

    fast = io.BytesIO()
    write_iso(tree, fast, label="SAME", joliet=joliet)
    monkeypatch.setattr(iso_module, "_FAST_PATH", False)
    slow = io.BytesIO()
    write_iso(tree, slow, label="SAME", joliet=joliet)
    assert fast.getvalue() == slow.getvalue()


def test_kernel_copy_to_a_file_writes_what_the_python_copy_writes(
    tree: Path, tmp_path: Path
) -> None:
    seen: list[int] = []
    on_disk = make_iso(tree, tmp_path / "o.iso", label="SAME", progress=seen.append)
    in_memory = io.BytesIO()  # no file descriptor: pycdlib's own copy loop
    write_iso(tree, in_memory, label="SAME")
    assert on_disk.read_bytes() == in_memory.getvalue()
    assert sum(seen) == on_disk.stat().st_size


def test_kernel_copy_refuses_a_file_that_shrank(tmp_path: Path) -> None:
    from imagekit.isofs._pycdlib import kernel_copy

    (tmp_path / "short").write_bytes(b"0123456789")
    with (
        open(tmp_path / "short", "rb") as infp,
        open(tmp_path / "out", "wb") as outfp,
        pytest.raises(IsoError, match="short shrank while the ISO was written"),
    ):
        list(kernel_copy(20, 4, infp, outfp))


def test_extract_drops_setuid_setgid_sticky_and_world_writable(tmp_path: Path) -> None:
    def build(iso: pycdlib.PyCdlib) -> None:
        iso.add_directory("/D", rr_name="d", file_mode=0o41777)  # sticky, world-writable
        iso.add_fp(
            io.BytesIO(b"#!/bin/sh\n"), 10, "/D/ROOT.;1", rr_name="rootshell", file_mode=0o106755
        )  # setuid, setgid
        iso.add_fp(io.BytesIO(b"x"), 1, "/D/OPEN.;1", rr_name="open", file_mode=0o100666)

    evil = _crafted(tmp_path, build)
    out = tmp_path / "out"
    extract_iso(evil, out)
    assert stat.S_IMODE((out / "d").stat().st_mode) == 0o775
    assert stat.S_IMODE((out / "d" / "rootshell").stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "d" / "open").stat().st_mode) == 0o664


def test_extract_stops_at_the_size_bound_iso_bomb(tmp_path: Path) -> None:
    """Fifty directory records sharing one 1 MiB extent: 51 MiB out of a 1 MiB ISO."""

    def build(iso: pycdlib.PyCdlib) -> None:
        data = b"\0" * (1 << 20)
        iso.add_fp(io.BytesIO(data), len(data), "/BIG.;1", rr_name="big")
        for i in range(50):
            iso.add_hard_link(iso_old_path="/BIG.;1", iso_new_path=f"/B{i}.;1", rr_name=f"b{i}")

    bomb = _crafted(tmp_path, build)
    assert bomb.stat().st_size < 2 << 20
    with pytest.raises(IsoError, match="more than the bound"):
        extract_iso(bomb, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before writing anything
    with pytest.raises(IsoError, match="more than the bound of 1000"):
        extract_iso(bomb, tmp_path / "out", max_bytes=1000)
    extract_iso(bomb, tmp_path / "out", max_bytes=60 << 20)
    assert (tmp_path / "out" / "b49").stat().st_size == 1 << 20


def test_cdrom_extract_bomb_is_one_line(cli, tmp_path: Path) -> None:
    def build(iso: pycdlib.PyCdlib) -> None:
        iso.add_fp(io.BytesIO(b"y" * 4096), 4096, "/F.;1", rr_name="f")
        for i in range(3):
            iso.add_hard_link(iso_old_path="/F.;1", iso_new_path=f"/G{i}.;1", rr_name=f"g{i}")

    bomb = _crafted(tmp_path, build)
    r = cli("cdrom", "--extract", bomb, tmp_path / "out", "--max-bytes", "8192")
    assert r.exit_code == 2
    assert r.stderr.splitlines()[0] == (
        "imagekit: error: the ISO's files would take 16384 bytes, more than the bound of 8192 "
        "(records sharing data, or an ISO bomb)"
    )
