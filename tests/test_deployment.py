"""The compose stack as `docker compose config` would read it (no Docker engine runs here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker" / "compose.yaml"


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_compose_has_the_full_stack() -> None:
    services = _compose()["services"]
    assert {"postgres", "redis", "web", "worker", "beat", "gpu-worker"} <= set(services)


def test_app_services_share_one_image_and_the_real_services() -> None:
    services = _compose()["services"]
    for name in ("web", "worker", "beat", "gpu-worker"):
        service = services[name]
        assert service["build"]["dockerfile"] == "docker/Dockerfile"
        context = (COMPOSE.parent / service["build"]["context"]).resolve()
        assert context == ROOT
        assert (context / service["build"]["dockerfile"]).exists()
        env = service["environment"]
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["CELERY_BROKER_URL"].startswith("redis://redis:")
        assert "media:/app/var/media" in service["volumes"]
        # web waits for the databases; the rest for web, which makes their database role
        assert set(service["depends_on"]) == ({"postgres", "redis"} if name == "web" else {"web"})


def test_workers_consume_the_inference_queue_and_gpu_worker_is_a_profile() -> None:
    services = _compose()["services"]
    assert "inference" in services["worker"]["environment"]["WORKER_QUEUES"].split(",")
    # Retraining jobs have a CPU worker of their own without the gpu profile.
    trainer = services["trainer"]
    assert trainer["environment"]["WORKER_QUEUES"] == "training" and "profiles" not in trainer
    gpu = services["gpu-worker"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["environment"]["INFERENCE_DEVICE"] == "cuda"
    assert gpu["environment"]["WORKER_CONCURRENCY"] == "1"
    assert gpu["build"]["args"]["BASE_IMAGE"].startswith("nvidia/cuda:")
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]


def test_entrypoint_knows_every_role_compose_uses() -> None:
    entrypoint = (ROOT / "docker" / "entrypoint.sh").read_text()
    services = _compose()["services"]
    for name in ("web", "worker", "beat", "gpu-worker"):
        (role,) = services[name]["command"]
        assert f"  {role})" in entrypoint
