"""Web processes never import torch (issue 15, item 4): only workers load the models.

A fresh interpreter (as a gunicorn worker starts) runs `django.setup()`, imports the URL conf,
resolves every named route and serves pages, API calls, Deep Zoom tiles, a cell crop and admin
pages against this test's committed data; then `torch` must not be in `sys.modules`. The first
import of torch, if any, is reported with the chain of our modules that caused it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token

from testkit.stack import run_script, subprocess_db_env

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import builtins, json, sys, traceback
first = []
_real_import = builtins.__import__

def _watch(name, *args, **kwargs):
    if not first and name.split(".")[0] == "torch" and "torch" not in sys.modules:
        first.append([f"{f.filename}:{f.lineno}" for f in traceback.extract_stack()
                      if "site-packages" not in f.filename and "<frozen" not in f.filename])
    return _real_import(name, *args, **kwargs)

builtins.__import__ = _watch
import django
django.setup()
after_setup = "torch" in sys.modules
from django.test import Client, override_settings
from django.urls import get_resolver, reverse
import papreview.urls  # noqa: F401

routes = [k for k in get_resolver().reverse_dict.keys() if isinstance(k, str)]
after_urls = "torch" in sys.modules
args = json.loads(sys.argv[1])
override_settings(MEDIA_ROOT=args["media"]).enable()  # the test's own media folder
from django.contrib.auth.models import User
api = Client(HTTP_AUTHORIZATION=f"Token {args['token']}")
page = Client()
page.force_login(User.objects.get(pk=args["admin"]))
s, c = args["slide"], args["cell"]
codes = {}
for client, url in [
    (page, "/healthz"), (page, "/"), (page, f"/slides/{s}/"), (page, "/upload/"),
    (page, "/models/"), (page, "/datasets/"), (page, "/admin/"),
    (page, "/admin/analysis/analysisrun/"), (page, "/admin/analysis/modelversion/"),
    (page, "/admin/cases/slide/"), (page, f"/admin/cases/slide/{s}/change/"),
    (api, "/api/slides/"), (api, f"/api/slides/{s}/"), (api, f"/api/slides/{s}/runs/"),
    (api, f"/api/slides/{s}/cells/"), (api, f"/api/slides/{s}/deepzoom.dzi"),
    (api, f"/api/slides/{s}/deepzoom_files/9/0_0.jpeg"),
    (api, f"/api/slides/{s}/deepzoom_files/0/0_0.jpeg"), (api, f"/api/cells/{c}/crop/"),
    (api, f"/api/cells/{c}/"), (api, "/api/model-versions/"),
]:
    codes[url] = client.get(url).status_code
print(json.dumps({"after_setup": after_setup, "after_urls": after_urls, "routes": len(routes),
                  "codes": codes, "torch": "torch" in sys.modules, "first": first[:1]}))
"""


@pytest.mark.django_db(transaction=True)
def test_a_web_process_serves_pages_apis_tiles_and_admin_without_torch(
    stored_slide, admin_user, media_root: Path
) -> None:
    slide = stored_slide(cells=3)
    cell = slide.cells.first()
    token, _ = Token.objects.get_or_create(user=admin_user)
    arg = json.dumps(
        {
            "token": token.key,
            "admin": admin_user.pk,
            "slide": slide.pk,
            "cell": cell.pk,
            "media": str(media_root),
        }
    )
    env = subprocess_db_env(ALLOWED_HOSTS="testserver,localhost")
    report = run_script(SCRIPT, arg, env=env, timeout=180)
    assert report["routes"] > 50  # the whole URL conf was imported and resolved
    # every request was really served (a 500 or a redirect to login would prove nothing)
    refused = {url: code for url, code in report["codes"].items() if code != 200}
    assert not refused
    first = "\n".join(report["first"][0]) if report["first"] else ""
    assert not report["after_setup"], f"django.setup() imported torch:\n{first}"
    assert not report["after_urls"], f"the URL conf imported torch:\n{first}"
    assert not report["torch"], f"serving requests imported torch:\n{first}"
