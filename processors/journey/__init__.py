"""The JourneyAgent: it carries a task's plan out step by step with tools and a reasoner.

- ``execution``: the pure core, ``evolve`` (what the log says) and ``decide`` (what to do
  next);
- ``recovery``: what to do about a failed attempt (retry, another tool or model, give up);
- ``tool_usage``: tool statistics and the circuit breaker;
- ``agent``: the jobs (tool and LLM calls) and the worker entry, ``worker(settings)``.

Nothing is re-exported here: importing the pure core does not load the agent's tools and
clients.
"""
