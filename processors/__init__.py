"""Stream processors: the agents and cost alerting, each a pure core in a thin faust shell."""
