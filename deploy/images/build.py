"""demat's container images without an image registry: everything from Debian packages and PyPI.

    python deploy/images/build.py [--reference DIR] [--print-env]

1. demat-base:bookworm-<key>: a Debian bookworm root file system made by `mmdebstrap` (minbase,
   Python 3.11, curl, dumb-init, libpq5, ...) and `docker import`ed. <key> hashes the recipe below
   and the machine's CA bundle (copied in, so that pip and apt work behind a TLS-inspecting proxy);
   an image with that tag is reused as is, so the base is built once per recipe.
2. demat-postgres:15-debian and demat-redis:7-debian: Debian's PostgreSQL 15 and Redis 7 on that
   base, with entrypoints that behave like the official images' for what compose uses.
3. demat-airflow:3.3.2-debian: a Python 3.11 venv with the pinned requirements.txt (its own layer,
   cached by Docker as long as requirements.txt and the base do not change), then the repository
   (the files git knows, modified or not, never .venv, state folders or deploy/*.env), and, only when
   --reference is given, the official reference schemas the counterparts judge by (never committed).

Steps 2 and 3 use Docker's build cache, so a second build with unchanged inputs takes seconds.
docker-compose.debian.yml selects these images; docker-compose.yml alone keeps the official ones.
Needs: a running Docker engine (DOCKER_HOST honoured), mmdebstrap, git. stdlib only.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CA_BUNDLE = Path(os.environ.get("DEMAT_BUILD_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt"))

SUITE = "bookworm"
MIRROR = os.environ.get("DEMAT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_PACKAGES = (
    "ca-certificates", "curl", "dumb-init", "libpq5", "procps", "python3.11", "python3.11-venv",
    "python3-venv", "tzdata", "netbase", "openssl", "libxml2", "libxslt1.1", "gosu",
)
RECIPE_VERSION = "1"

BASE_REPO = "demat-base"
POSTGRES_IMAGE = "demat-postgres:15-debian"
REDIS_IMAGE = "demat-redis:7-debian"
DEMAT_IMAGE = "demat-airflow:3.3.2-debian"
# never sent to the engine in the context
EXCLUDED_PREFIXES = (".venv/", ".demat", "deploy/demat.env", "test-artifacts/", "bench/out/", ".git/")


def base_key() -> str:
    recipe = {"suite": SUITE, "mirror": MIRROR, "packages": sorted(BASE_PACKAGES), "v": RECIPE_VERSION,
              "ca": hashlib.sha256(CA_BUNDLE.read_bytes()).hexdigest() if CA_BUNDLE.is_file() else ""}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def base_tag() -> str:
    return f"{BASE_REPO}:{SUITE}-{base_key()}"


def _docker(*args: str, check: bool = True, timeout: float = 3600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], check=check, timeout=timeout, text=True,
                          capture_output=kw.pop("capture_output", True), **kw)


def image_exists(tag: str) -> bool:
    return _docker("image", "inspect", tag, check=False).returncode == 0


def image_size(tag: str) -> int:
    return int(_docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())


def build_base(log=print) -> tuple[str, bool]:
    """(tag, built): the Debian base image, made only when no image carries the recipe's key."""
    tag = base_tag()
    if image_exists(tag):
        return tag, False
    log(f"[demat] image de base {tag} : mmdebstrap {SUITE} (quelques minutes, une seule fois)")
    hooks = []
    if CA_BUNDLE.is_file():
        hooks += ["--customize-hook", f"copy-in {CA_BUNDLE} /etc/ssl/certs/"]
    hooks += ["--customize-hook", 'chroot "$1" sh -c "rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/*"']
    deb = subprocess.Popen(
        ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar", "--quiet",
         "--include=" + ",".join(BASE_PACKAGES), *hooks, SUITE, "-", MIRROR],
        stdout=subprocess.PIPE)
    changes = ["ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               'CMD ["bash"]']
    imp = subprocess.run(["docker", "import", *sum((["--change", c] for c in changes), []), "-", tag],
                         stdin=deb.stdout, capture_output=True, text=True, timeout=3600)
    deb.stdout.close()
    rc = deb.wait(timeout=3600)
    if rc != 0 or imp.returncode != 0:
        raise RuntimeError(f"image de base : mmdebstrap rc={rc}, docker import: {imp.stderr[-2000:]}")
    return tag, True


def _context_files() -> list[str]:
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         check=True, capture_output=True).stdout.decode()
    return sorted({f for f in out.split("\0") if f and not f.startswith(EXCLUDED_PREFIXES)
                   and (REPO / f).is_file() and not (REPO / f).is_symlink()})


def context_tar(reference: Path | None = None) -> bytes:
    """The repository as git sees it (tracked and untracked-not-ignored), plus _reference/ if given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:  # gzip: the CLI detects it as a context
        for rel in _context_files():
            tar.add(REPO / rel, arcname=rel, recursive=False)
        info = tarfile.TarInfo("_reference")
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        if reference is not None and reference.is_dir():
            for path in sorted(reference.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    tar.add(path, arcname="_reference/" + path.relative_to(reference).as_posix(), recursive=False)
    return buf.getvalue()


def _build(tag: str, dockerfile: str, base: str, context: bytes, log=print) -> None:
    args = ["build", "-f", dockerfile, "--build-arg", f"BASE_IMAGE={base}", "-t", tag, "-"]
    proc = subprocess.run(["docker", *args], input=context, capture_output=True, timeout=3600,
                          env={**os.environ, "DOCKER_BUILDKIT": "0"})
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).decode(errors="replace")[-4000:]
        raise RuntimeError(f"docker build {tag} a échoué :\n{tail}")


def _small_context(*files: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for rel in files:
            tar.add(REPO / rel, arcname=rel, recursive=False)
    return buf.getvalue()


def build_all(reference: Path | None = None, log=print) -> dict:
    """Builds (or reuses) every image; returns the timings (s), sizes (bytes) and whether the base was built."""
    figures: dict = {"timings_s": {}, "sizes_bytes": {}}
    t0 = time.monotonic()
    base, built = build_base(log)
    figures["timings_s"]["base"] = round(time.monotonic() - t0, 1)
    figures["base_built"] = built
    figures["base_image"] = base
    for tag, dockerfile in ((POSTGRES_IMAGE, "deploy/images/Dockerfile.postgres"),
                            (REDIS_IMAGE, "deploy/images/Dockerfile.redis")):
        t = time.monotonic()
        _build(tag, dockerfile, base, _small_context(dockerfile, "deploy/images/postgres-entrypoint.sh",
                                                      "deploy/images/redis-entrypoint.sh"), log)
        figures["timings_s"][tag] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    _build(DEMAT_IMAGE, "deploy/images/Dockerfile.demat", base, context_tar(reference), log)
    figures["timings_s"][DEMAT_IMAGE] = round(time.monotonic() - t, 1)
    figures["timings_s"]["total"] = round(time.monotonic() - t0, 1)
    for tag in (base, POSTGRES_IMAGE, REDIS_IMAGE, DEMAT_IMAGE):
        figures["sizes_bytes"][tag] = image_size(tag)
    return figures


def compose_env() -> dict[str, str]:
    """The variables docker-compose.debian.yml reads."""
    return {"DEMAT_IMAGE": DEMAT_IMAGE, "DEMAT_POSTGRES_IMAGE": POSTGRES_IMAGE, "DEMAT_REDIS_IMAGE": REDIS_IMAGE}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, help="official reference schemas to put in the image (optional)")
    parser.add_argument("--print-env", action="store_true", help="print the compose variables after the build")
    args = parser.parse_args(argv)
    figures = build_all(args.reference)
    print(json.dumps(figures, indent=2))
    if args.print_env:
        for k, v in compose_env().items():
            print(f"{k}={v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
