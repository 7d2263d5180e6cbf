"""The api package's public surface."""

from __future__ import annotations

import api


def test_api_exports_only_the_app_factory() -> None:
    """Callers build the app with api.create_app(settings); everything else is internal."""
    assert api.__all__ == ["create_app"]
    assert callable(api.create_app)
