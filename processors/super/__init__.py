"""The SuperAgent: for each submitted task it assigns roles, allocates tools and makes the
plan the JourneyAgent carries out.

- ``agent``: the pure core (``evolve``, ``decide``), the planning job and the worker entry,
  ``worker(settings)``.

What planning shares with the other agents (roles, playbooks, the plan, prices) is in
:mod:`processors.shared`.
"""
