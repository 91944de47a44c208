"""Build the image with podman on a locally made stand-in base and check it the way operators run it.

    uv run python scripts/container_check.py

No registry or Docker engine is needed: the base is a Debian minbase root filesystem made with
debootstrap (cached under /var/cache/genai-backend-ci, or $GENAI_CI_CACHE), imported with
`podman import` and passed as BASE_IMAGE. Missing podman, runc or debootstrap are installed with
apt-get when running as root. Scenarios: embedded database on a volume; SIGTERM and a restart on
the same volume; read-only root; an external PostgreSQL over the host network. Prints the sizes
and times it measured; removes its containers and volumes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bookworm: its python3 is 3.11, and pgserver 0.1.4 has wheels for 3.11 and 3.12 only.
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Bump when the recipe below changes, so a cached base is rebuilt.
BASE_RECIPE = "1"
# What the official slim images leave out (docs, man pages, translations).
TRIM = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian",
        "usr/share/common-licenses", "var/cache/apt", "var/lib/apt/lists", "var/log", "var/cache/debconf")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
IMAGE = "localhost/genai-backend:ci"
BUILD_STAGE = "localhost/genai-backend:ci-build-stage"
BASE_REPO = "localhost/genai-backend-ci-base"
# Not the router's published defaults: with an external database the service may refuse those.
CHECK_MASTER_KEY = "container-check-master-key"


@dataclass
class Report:
    figures: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, value: str) -> None:
        self.figures[name] = value
        print(f"  {name}: {value}", flush=True)


def step(text: str) -> None:
    print(f"== {text}", flush=True)


def run(cmd: Sequence[str], check: bool = True, capture: bool = True, timeout: float = 600,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), text=True, capture_output=capture, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout or ''}\n{proc.stderr or ''}")
    return proc


# ---- podman with this machine's constraints ----------------------------------------------------

def limits() -> list[str]:
    """--ulimit flags at or below the caller's own limits (podman refuses to raise them)."""
    flags = []
    for name, rlimit, cap in (("nofile", resource.RLIMIT_NOFILE, 1024), ("nproc", resource.RLIMIT_NPROC, 1000)):
        soft, hard = resource.getrlimit(rlimit)
        value = min(v for v in (soft, hard, cap) if v != resource.RLIM_INFINITY)
        flags += ["--ulimit", f"{name}={value}:{value}"]
    return flags


# crun refuses this machine's hybrid cgroup layout; runc copes.
PODMAN = ["podman", "--runtime", "runc"]


def podman(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return run([*PODMAN, *args], check=check, timeout=timeout)


def ensure_tools() -> None:
    missing = [tool for tool, binary in (("podman", "podman"), ("runc", "runc"), ("debootstrap", "debootstrap"))
               if shutil.which(binary) is None and not Path("/usr/sbin", binary).exists()]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"missing {', '.join(missing)}; install them (apt-get install {' '.join(missing)}) or run as root")
    step(f"installing {' '.join(missing)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Wait for another apt-get (CI installs chromium with one) instead of failing on its lock.
    wait = ["-o", "DPkg::Lock::Timeout=600"]
    run(["apt-get", *wait, "update", "-qq"], env=env, timeout=900)
    run(["apt-get", *wait, "install", "-y", "-qq", "--no-install-recommends", *missing], env=env, timeout=900)


# ---- the stand-in base ---------------------------------------------------------------------------

def cache_dir() -> Path:
    return Path(os.environ.get("GENAI_CI_CACHE", "/var/cache/genai-backend-ci"))


def base_key() -> str:
    digest = hashlib.sha256(f"{BASE_RECIPE} {SUITE} {' '.join(BASE_PACKAGES)} {' '.join(TRIM)}".encode())
    # The host's bundle goes into the base, so a changed bundle is a different base.
    if HOST_CA_BUNDLE.exists():
        digest.update(HOST_CA_BUNDLE.read_bytes())
    return digest.hexdigest()[:12]


def make_rootfs_tar(target: Path) -> None:
    """debootstrap minbase + python3, trimmed like the slim images, with the host's CA bundle."""
    mirror = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
    work = Path(tempfile.mkdtemp(prefix="genai-ci-rootfs-", dir=target.parent))
    try:
        rootfs = work / "rootfs"
        run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(rootfs), mirror],
            timeout=900)
        for rel in TRIM:
            path = rootfs / rel
            if path.is_dir():
                for child in path.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
        # Keep later apt-get installs (in a build stage) as lean as the base itself.
        (rootfs / "etc/dpkg/dpkg.cfg.d/slim").write_text(
            "".join(f"path-exclude /{rel}/*\n" for rel in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale")))
        (rootfs / "etc/apt/apt.conf.d/slim").write_text('APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n')
        # Builds download wheels over HTTPS; here that is verified against the host's bundle.
        if HOST_CA_BUNDLE.exists():
            shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
        partial = target.with_suffix(".partial")
        run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."])
        partial.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ensure_base(report: Report) -> str:
    key = base_key()
    tag = f"{BASE_REPO}:{key}"
    if podman("image", "exists", tag, check=False).returncode == 0:
        step(f"stand-in base {tag} (already imported)")
    else:
        cache = cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        tar = cache / f"base-{SUITE}-{key}.tar"
        if tar.exists():
            step(f"stand-in base from cache {tar}")
        else:
            step(f"stand-in base: debootstrap {SUITE} into {tar}")
            started = time.monotonic()
            make_rootfs_tar(tar)
            report.add("debootstrap (cold base cache)", f"{time.monotonic() - started:.0f} s")
        changes = [
            "ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV=LANG=C.UTF-8",
            # The slim images' pip and uv bring their own roots; this base tells them to use its bundle.
            "ENV=SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
            "ENV=PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
            'CMD=["python3"]',
        ]
        podman("import", *(arg for change in changes for arg in ("--change", change)), str(tar), tag)
        # Bases of an older recipe or CA bundle are never used again.
        for old in podman("images", "--format", "{{.Repository}}:{{.Tag}}", BASE_REPO).stdout.split():
            if old != tag:
                podman("rmi", old, check=False)
        for old_tar in cache.glob(f"base-{SUITE}-*.tar"):
            if old_tar != tar:
                old_tar.unlink()
    return tag


def image_mb(tag: str) -> float:
    return int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip()) / 1e6


def build(base: str, report: Report) -> None:
    step(f"podman build {IMAGE} (BASE_IMAGE={base})")
    started = time.monotonic()
    common = ["build", "--runtime", "runc", "--format", "docker", *limits(), "--build-arg", f"BASE_IMAGE={base}",
              "-f", str(ROOT / "Containerfile")]
    # The build stage gets a tag of its own: tagged, its layers are the next run's cache and
    # survive the pruning below, which only drops the stale layers of earlier builds.
    podman(*common, "--target", "build", "-t", BUILD_STAGE, str(ROOT), timeout=900)
    podman(*common, "-t", IMAGE, str(ROOT), timeout=900)
    report.add("build", f"{time.monotonic() - started:.0f} s")
    for _ in range(20):
        if not podman("image", "prune", "-f", check=False).stdout.strip():
            break
    report.add("image size", f"{image_mb(IMAGE):.0f} MB")
    report.add("stand-in base size", f"{image_mb(base):.0f} MB")


def inspect_image(report: Report) -> None:
    step("image contents")
    image = json.loads(podman("image", "inspect", IMAGE).stdout)[0]
    config = image["Config"]
    # podman reports it beside Config; a build in OCI format would have dropped it.
    assert image.get("Healthcheck") or config.get("Healthcheck"), "HEALTHCHECK lost (build without --format docker?)"
    assert config.get("User") == "10001:10001", config.get("User")
    assert config.get("Entrypoint") == ["genai-backend"], config.get("Entrypoint")
    probe = (
        "import importlib.util as u, os, shutil, pathlib;"
        "bad = [m for m in ('pytest', 'uv', 'schemathesis', 'playwright', 'mypy', 'ruff') if u.find_spec(m)];"
        "bad += [t for t in ('uv', 'gcc', 'cc', 'strip', 'readelf', 'git', 'curl') if shutil.which(t)];"
        "bad += [p for p in ('/app/.git', '/root/.cache/uv', '/app/tests', '/opt/uv') if pathlib.Path(p).exists()];"
        "extra = set(os.listdir('/app')) - {'.venv', 'genai_backend', 'sql', 'migrations'};"
        "bad += ['/app/' + name for name in sorted(extra)];"
        "print(' '.join(bad))"
    )
    found = podman("run", "--rm", *limits(), "--no-healthcheck", "--user", "0", "--entrypoint", "python", IMAGE, "-c", probe).stdout.strip()
    assert not found, f"the image holds what it should not: {found}"
    site = "/app/.venv/lib/python3*/site-packages"
    # One du per directory: a single du counts each directory once, under the first argument.
    script = (f"for d in / /usr /usr/lib /usr/share /app /app/.venv {site} /app/genai_backend /app/sql /app/migrations; "
              f"do du -xsm $d; done; du -xm -d 1 {site} | sort -rn | sed -n 2,13p")
    du = podman("run", "--rm", *limits(), "--no-healthcheck", "--user", "0", "--entrypoint", "sh", IMAGE, "-c",
                script).stdout
    print("  du -m (MiB, disk usage) of the largest directories:")
    for line in du.splitlines():
        print(f"    {line}")


# ---- talking to the service ----------------------------------------------------------------------

def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 10) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def register_and_login(base_url: str) -> str:
    username, password = f"ci-{uuid.uuid4().hex[:8]}", "Container-check-1"
    status, body = http("POST", f"{base_url}/api/register", json.dumps({"username": username, "password": password}).encode(),
                        {"Content-Type": "application/json"})
    assert status == 200, (status, body)
    form = urllib.parse.urlencode({"username": username, "password": password}).encode()
    status, body = http("POST", f"{base_url}/api/login/access-token", form, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200, (status, body)
    token: str = json.loads(body)["access_token"]
    return token


def upload(base_url: str, token: str, content: bytes) -> str:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="check.bin"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    status, answer = http("POST", f"{base_url}/files", body,
                          {"Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 201, (status, answer)
    file_id: str = json.loads(answer)["id"]
    return file_id


def download(base_url: str, token: str, file_id: str) -> bytes:
    status, body = http("GET", f"{base_url}/files/{file_id}", headers={"Authorization": f"Bearer {token}"})
    assert status == 200, (status, body)
    return body


# ---- containers ----------------------------------------------------------------------------------

class Containers:
    """Names every container and volume it makes, and removes them all at the end."""

    def __init__(self) -> None:
        self.prefix = f"genai-ci-{os.getpid()}"
        self.containers: list[str] = []
        self.volumes: list[str] = []

    def volume(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        podman("volume", "create", name)
        self.volumes.append(name)
        return name

    def start(self, suffix: str, *options: str) -> tuple[str, float]:
        """Start detached; returns the name and the monotonic time just before `podman run`."""
        name = f"{self.prefix}-{suffix}"
        self.containers.append(name)
        started = time.monotonic()
        podman("run", "-d", "--name", name, *limits(), *options, IMAGE)
        return name, started

    def cleanup(self) -> None:
        for name in reversed(self.containers):
            podman("rm", "-f", "-v", "-t", "0", name, check=False)
        for name in self.volumes:
            podman("volume", "rm", "-f", name, check=False)


def logs(name: str) -> str:
    proc = podman("logs", name, check=False)
    return (proc.stdout + proc.stderr)[-4000:]


def wait_healthy(name: str, started: float, timeout: float = 60) -> float:
    """Run the image's HEALTHCHECK until it passes (podman only schedules it itself under systemd)."""
    deadline = started + timeout
    while time.monotonic() < deadline:
        if podman("healthcheck", "run", name, check=False, timeout=30).returncode == 0:
            elapsed = time.monotonic() - started
            status = podman("inspect", "--format", "{{.State.Health.Status}}", name).stdout.strip()
            assert status == "healthy", status
            return elapsed
        state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        if state not in {"running", "created"}:
            raise SystemExit(f"{name} is {state} before becoming healthy:\n{logs(name)}")
        time.sleep(0.1)
    raise SystemExit(f"{name} not healthy after {timeout} s:\n{logs(name)}")


def published_url(name: str) -> str:
    mapping = podman("port", name, "8000/tcp").stdout.strip().splitlines()[0]
    host, _, port = mapping.rpartition(":")
    return f"http://{host}:{port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ---- an external PostgreSQL on 127.0.0.1 (the project's own pgserver binaries, over TCP) ------------

@contextmanager
def external_postgres() -> Iterator[tuple[int, str]]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs on XDG_RUNTIME_DIR, irrelevant here
        import pgserver._commands as pg  # the project's venv (uv run)

    bindir = pg.POSTGRES_BIN_PATH
    work = Path(tempfile.mkdtemp(prefix="genai-ci-pg-"))
    password = secrets.token_hex(12)
    port = free_port()
    # PostgreSQL refuses to run as root; CI is root, so the server runs as `nobody` there.
    user = "nobody" if os.geteuid() == 0 else None
    if user:
        os.chmod(work, 0o755)
        shutil.chown(work, user)
    pgdata, pwfile = work / "pgdata", work / "pw"
    pwfile.write_text(password)
    if user:
        shutil.chown(pwfile, user)

    def as_user(cmd: list[str]) -> None:
        proc = subprocess.run(cmd, user=user, capture_output=True, text=True, timeout=120, cwd=work)
        if proc.returncode != 0:
            raise SystemExit(f"external PostgreSQL: {' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")

    as_user([str(bindir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=scram-sha-256", f"--pwfile={pwfile}",
             "--encoding=utf8", "--no-sync"])
    as_user([str(bindir / "pg_ctl"), "-D", str(pgdata), "-w", "-l", str(work / "log"),
             "-o", f"-h 127.0.0.1 -p {port} -k {work}", "start"])
    try:
        yield port, password
    finally:
        subprocess.run([str(bindir / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"], user=user,
                       capture_output=True, timeout=60)
        shutil.rmtree(work, ignore_errors=True)


# ---- the scenarios ---------------------------------------------------------------------------------

def scenarios(report: Report, box: Containers) -> None:
    publish = ["-p", "127.0.0.1::8000"]

    step("1. embedded database on a volume")
    data = box.volume("data")
    first, started = box.start("first", *publish, "-v", f"{data}:/data")
    report.add("start to healthy, first start (initdb)", f"{wait_healthy(first, started):.1f} s")
    url = published_url(first)
    token = register_and_login(url)
    content = os.urandom(256 * 1024)
    file_id = upload(url, token, content)
    assert download(url, token, file_id) == content
    print("  registered, logged in, uploaded and downloaded 256 KiB")

    step("2. SIGTERM, then a new container on the same volume")
    started = time.monotonic()
    podman("stop", "-t", "10", first, timeout=60)
    stop_s = time.monotonic() - started
    exit_code = int(podman("inspect", "--format", "{{.State.ExitCode}}", first).stdout.strip())
    report.add("SIGTERM to exit", f"{stop_s:.1f} s, exit code {exit_code}")
    assert exit_code == 0, logs(first)
    assert stop_s <= 10, f"stop took {stop_s:.1f} s"
    second, started = box.start("second", *publish, "-v", f"{data}:/data")
    report.add("start to healthy, initialised volume", f"{wait_healthy(second, started):.1f} s")
    url = published_url(second)
    assert download(url, token, file_id) == content, "file or token lost across containers"
    print("  the old token still works and the file is intact")
    podman("stop", "-t", "10", second, timeout=60)
    migrate = podman("run", "--rm", *limits(), "--no-healthcheck", "-v", f"{data}:/data", IMAGE, "migrate")
    assert "up to date" in migrate.stdout, migrate.stdout
    print(f"  `podman run IMAGE migrate`: {migrate.stdout.strip()}")

    step("3. read-only root filesystem, tmpfs /tmp, fresh volume")
    fresh = box.volume("fresh")
    readonly, started = box.start("readonly", *publish, "-v", f"{fresh}:/data", "--read-only", "--read-only-tmpfs=false",
                                  "--tmpfs", "/tmp:rw,mode=1777,size=64m")
    report.add("start to healthy, read-only root (initdb)", f"{wait_healthy(readonly, started):.1f} s")
    url = published_url(readonly)
    token = register_and_login(url)
    file_id = upload(url, token, content)
    assert download(url, token, file_id) == content
    stored = podman("exec", readonly, "ls", "/data/files").stdout.split()
    assert len(stored) == 1, stored
    print(f"  upload stored as /data/files/{stored[0]}")

    step("4. external PostgreSQL over the host network")
    with external_postgres() as (pg_port, pg_password):
        env = ["-e", "POSTGRES_HOST=127.0.0.1", "-e", f"POSTGRES_PORT={pg_port}", "-e", f"POSTGRES_PASSWORD={pg_password}",
               "-e", f"SECRET_KEY={secrets.token_hex(32)}", "-e", f"MASTER_BE_API_KEY={CHECK_MASTER_KEY}",
               "-e", f"MASTER_AGENT_API_KEY={CHECK_MASTER_KEY}-agent"]
        http_port = free_port()
        external, started = box.start("external", "--network", "host", "-e", f"PORT={http_port}", *env)
        report.add("start to healthy, external PostgreSQL", f"{wait_healthy(external, started):.1f} s")
        status, body = http("GET", f"http://127.0.0.1:{http_port}/ready")
        assert status == 200, (status, body)
        assert "pgdata" not in podman("exec", external, "ls", "/data").stdout, "started the embedded database"
        print(f"  /ready: {body.decode()[:200]}")


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    report = Report()
    ensure_tools()
    base = ensure_base(report)
    build(base, report)
    inspect_image(report)
    box = Containers()
    try:
        scenarios(report, box)
    finally:
        box.cleanup()
    step("container check passed")
    for name, value in report.figures.items():
        print(f"  {name}: {value}")


if __name__ == "__main__":
    main()
