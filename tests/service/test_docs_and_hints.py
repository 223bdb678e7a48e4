"""Service polish: /docs works offline (Swagger UI served by the service, no CDN), and a bare
Bundle posted to /evaluate gets a hint instead of three 'Extra inputs' errors."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from service_support import AUTH, example


def test_docs_load_every_asset_from_the_service(api: TestClient) -> None:
    page = api.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets, page.text
    for asset in assets:
        assert asset.startswith("/"), f"{asset} is not served by the service"
        assert api.get(asset).status_code == 200, asset
    assert "openapi.json" in page.text


def test_a_bare_bundle_gets_a_hint(api: TestClient) -> None:
    response = api.post("/evaluate", json=example("itp-relapsed-candidate"), headers=AUTH)
    assert response.status_code == 400
    (issue,) = response.json()["issue"]
    assert "bare FHIR Bundle" in issue["diagnostics"]
    assert '{"bundle": <the Bundle>}' in issue["diagnostics"]
