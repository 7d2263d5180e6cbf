"""The api.mcp package's public surface."""

from __future__ import annotations

import api.mcp


def test_api_mcp_exports_the_server_its_two_transports_and_its_client() -> None:
    """build_server for both transports, McpEndpoint for /mcp, serve_stdio for `wrenchai
    mcp`, and the API client they call with; the rest is internal."""
    assert sorted(api.mcp.__all__) == [
        "ApiCallError",
        "McpEndpoint",
        "WrenchApi",
        "build_server",
        "serve_stdio",
    ]
