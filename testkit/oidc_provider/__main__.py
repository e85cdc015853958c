"""Run the test identity provider: `python -m testkit.oidc_provider PORT REDIRECT_URI USERS_JSON`.

Migrates its SQLite database in OIDC_PROVIDER_DIR, writes a fresh RSA key, registers one
confidential client (`papreview` / `papreview-secret`, RS256, no consent screen) for
REDIRECT_URI, makes the users of USERS_JSON ([{username, password, email, first_name,
last_name, groups}]) and serves on 127.0.0.1:PORT with a threaded WSGI server."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

CLIENT_ID = "papreview"
CLIENT_SECRET = "papreview-secret"


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write("idp: " + (format % args) + "\n")


def main(port: int, redirect_uri: str, users: list[dict[str, object]]) -> None:
    state = Path(os.environ.setdefault("OIDC_PROVIDER_DIR", "/tmp/papreview-oidc-provider"))
    state.mkdir(parents=True, exist_ok=True)
    if not (state / "rsa.pem").exists():
        from jwcrypto import jwk

        key = jwk.JWK.generate(kty="RSA", size=2048)
        (state / "rsa.pem").write_bytes(key.export_to_pem(private_key=True, password=None))
    os.environ["DJANGO_SETTINGS_MODULE"] = "testkit.oidc_provider.settings"
    import django

    django.setup()
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application
    from oauth2_provider.models import Application

    call_command("migrate", verbosity=0)
    Application.objects.filter(client_id=CLIENT_ID).delete()
    Application.objects.create(
        name="PapReview",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=redirect_uri,
        algorithm=Application.RS256_ALGORITHM,
        skip_authorization=True,
    )
    for spec in users:
        user, _ = User.objects.get_or_create(username=str(spec["username"]))
        user.email = str(spec.get("email", ""))
        user.first_name = str(spec.get("first_name", ""))
        user.last_name = str(spec.get("last_name", ""))
        user.set_password(str(spec["password"]))
        user.save()
        groups = [Group.objects.get_or_create(name=str(g))[0] for g in spec.get("groups", [])]  # type: ignore[attr-defined]
        user.groups.set(groups)
    server = make_server(
        "127.0.0.1", port, get_wsgi_application(), ThreadingWSGIServer, QuietHandler
    )
    print(f"identity provider on http://127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]))
