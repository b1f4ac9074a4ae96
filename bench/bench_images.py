"""Container images without a registry (issue 19): build time cold and warm, sizes, cluster start-to-ready.

    .venv/bin/python bench/bench_images.py [--cold] [--no-cluster]

deploy/images/build.py builds demat-base (mmdebstrap + docker import), demat-postgres, demat-redis
and demat-airflow. --cold first removes those images and Docker's build cache (the Debian packages
and the wheels are downloaded again: minutes); without it the first build is whatever the cache
allows and is reported as such. A second build follows at once: the warm figure (every layer
reused). Then, unless --no-cluster, a throw-away compose project (docker-compose.yml +
docker-compose.debian.yml) is brought up and timed until every healthcheck passes and airflow-init
has finished, then removed with its volumes. Uses the engine that answers, else starts its own
dockerd (deploy/images/cluster.py) and stops it at the end. Prints FIGURE lines; nothing is asserted.
Needs root, docker.io, docker-compose, mmdebstrap; says why and exits 0 without them.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import figure, loadavg, log  # noqa: E402

IMAGES = Path(__file__).resolve().parents[1] / "deploy" / "images"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"demat_images_{name}", IMAGES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cold", action="store_true", help="remove the images and the build cache first")
    ap.add_argument("--no-cluster", action="store_true", help="skip the start-to-ready measure")
    ap.add_argument("--timeout", type=float, default=1200, help="bound on the cluster start (s)")
    args = ap.parse_args(argv)
    missing = [t for t in ("dockerd", "docker", "docker-compose", "mmdebstrap", "git") if not shutil.which(t)]
    if missing or os.geteuid() != 0:
        log(f"skipped: needs root and {', '.join(missing) or 'the tools'} (make test-deps)")
        return 0
    build, clusterlib = _load("build"), _load("cluster")
    engine = clusterlib.Engine()
    engine.start()
    if "DOCKER_HOST" in engine.env:
        os.environ["DOCKER_HOST"] = engine.env["DOCKER_HOST"]
    reference = (Path(__file__).resolve().parents[2] / "shared" / "reference").resolve()
    reference = reference if reference.is_dir() else None
    try:
        if args.cold:
            tags = [build.base_tag(), build.POSTGRES_IMAGE, build.REDIS_IMAGE, build.DEMAT_IMAGE]
            engine.run("docker", "image", "rm", "-f", *tags, check=False)
            engine.run("docker", "builder", "prune", "-af", check=False, timeout=600)
        load0 = loadavg()
        first = build.build_all(reference, log=log)
        kind = "cold" if first["base_built"] else "first"
        log(f"{kind} build: {first['timings_s']}")
        second = build.build_all(reference, log=log)
        log(f"warm build: {second['timings_s']}")
        note = f"load {load0} -> {loadavg()}; base {'built' if first['base_built'] else 'reused'} in the first build"
        print(figure(f"images_build_{kind}", first["timings_s"]["total"], "s", note=note))
        print(figure("images_build_warm", second["timings_s"]["total"], "s", first["timings_s"]["total"], note=note))
        for tag, size in second["sizes_bytes"].items():
            print(figure(f"image_size_{tag.split(':')[0]}", size / 1e6, "MB", note=tag))
        if not args.no_cluster:
            project = clusterlib.Project(engine, {**build.compose_env(), "DEMAT_DEBIAN_IMAGE": build.DEMAT_IMAGE},
                                         name=f"dematbench{os.getpid()}")
            try:
                load1 = loadavg()
                t0 = time.monotonic()
                project.up(args.timeout)
                project.wait_healthy(max(60.0, args.timeout - (time.monotonic() - t0)))
                ready = time.monotonic() - t0
                log(f"cluster ready in {ready:.0f} s")
                print(figure("cluster_start_to_ready", ready, "s", note=f"fresh volumes; load {load1} -> {loadavg()}"))
            finally:
                left = project.teardown()
                if left:
                    log(f"left behind: {left}")
    finally:
        engine.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
