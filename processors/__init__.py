"""Stream processors: the agents and cost alerting, each a pure core in a thin faust shell.

One package per agent (``super``, ``journey``, ``inspector``), the shell they all run in
(``runtime``), what several of them use (``shared``), the reasoners (``reasoning``) and the
tools (``tools``); docs/architecture.md has the map.
"""
