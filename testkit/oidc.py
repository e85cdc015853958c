"""The test identity provider (testkit/oidc_provider) as a process on a free loopback port, and
the app's OIDC settings pointed at it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testkit.stack import free_port, wait_port

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class IdentityProvider:
    url: str
    client_id: str = "papreview"
    client_secret: str = "papreview-secret"

    def app_settings(self) -> dict[str, Any]:
        """Settings of the app (mozilla-django-oidc) for this provider."""
        return {
            "OIDC_RP_CLIENT_ID": self.client_id,
            "OIDC_RP_CLIENT_SECRET": self.client_secret,
            "OIDC_RP_SIGN_ALGO": "RS256",
            "OIDC_OP_AUTHORIZATION_ENDPOINT": f"{self.url}/o/authorize/",
            "OIDC_OP_TOKEN_ENDPOINT": f"{self.url}/o/token/",
            "OIDC_OP_USER_ENDPOINT": f"{self.url}/o/userinfo/",
            "OIDC_OP_JWKS_ENDPOINT": f"{self.url}/o/.well-known/jwks.json",
        }


@contextlib.contextmanager
def identity_provider(
    *, redirect_uri: str, users: list[dict[str, Any]]
) -> Iterator[IdentityProvider]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="papreview-idp-") as state:
        env = {**os.environ, "OIDC_PROVIDER_DIR": state, "PYTHONPATH": str(ROOT)}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        log = Path(state) / "idp.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "testkit.oidc_provider",
                    str(port),
                    redirect_uri,
                    json.dumps(users),
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            try:
                try:
                    wait_port(port, timeout=60)
                except TimeoutError:
                    raise RuntimeError(
                        f"identity provider did not start:\n{log.read_text()}"
                    ) from None
                yield IdentityProvider(url=f"http://127.0.0.1:{port}")
            finally:
                proc.terminate()
                proc.wait(timeout=10)
