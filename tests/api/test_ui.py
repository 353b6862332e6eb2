"""The dashboard's files: served from the package, from this origin only, under the API's auth."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest

from tei_reconciler.api.ui import assets
from tei_reconciler.auth.build import build_rest_auth
from tei_reconciler.settings import AuthSettings, TokenSettings

from .harness import Api, build, make_settings

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "tei_reconciler" / "api" / "static"


@pytest.mark.anyio
async def test_the_root_and_ui_lead_to_the_dashboard_page(api: Api) -> None:
    for path in ("/", "/ui"):
        response = await api.client.get(path)
        assert response.status_code == 307
        assert response.headers["location"] == "ui/"
    page = await api.client.get("/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="app.js">' in page.text


@pytest.mark.anyio
async def test_every_file_allows_this_origin_only_and_is_revalidated(api: Api) -> None:
    for name in assets():
        response = await api.client.get(f"/ui/{name}")
        assert response.status_code == 200, name
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "script-src 'self'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        again = await api.client.get(
            f"/ui/{name}", headers={"if-none-match": response.headers["etag"]}
        )
        assert again.status_code == 304
    missing = await api.client.get("/ui/nothing.js")
    assert (missing.status_code, missing.json()["code"]) == (404, "NOT_FOUND")


def test_the_page_loads_nothing_from_elsewhere() -> None:
    external = re.compile(
        r"""(?:src|href)\s*=\s*["'](?:https?:)?//|import\s+[^;]*["']https?://|url\(\s*["']?https?://"""
    )
    for path in STATIC.iterdir():
        assert not external.search(path.read_text()), path.name


def test_a_non_editable_install_ships_every_dashboard_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["tei_reconciler.api"]
    for path in STATIC.iterdir():
        assert any(fnmatch.fnmatch(f"static/{path.name}", p) for p in patterns), path.name
    assert set(assets()) == {p.name for p in STATIC.iterdir()}


@pytest.mark.anyio
async def test_with_token_auth_the_page_loads_when_exempted_and_its_data_needs_the_token(
    tmp_path: Path,
) -> None:
    auth = AuthSettings(
        providers=("token",),
        token=TokenSettings(tokens=("s3cret",)),
        exempt_paths=("/health", "/metrics", "/ui", "/ui/"),
    )
    settings = make_settings(tmp_path / "runtime", auth=auth)
    middleware, _ = build_rest_auth(settings)
    _, api = build(tmp_path, settings, middleware=middleware)
    async with api.client:
        assert (await api.client.get("/ui/")).status_code == 200
        assert (await api.client.get("/ui/app.js")).status_code == 200
        refused = await api.client.get("/instances")
        assert (refused.status_code, refused.json()["code"]) == (401, "UNAUTHORIZED")
        allowed = await api.client.get("/instances", headers={"authorization": "Bearer s3cret"})
        assert allowed.status_code == 200
