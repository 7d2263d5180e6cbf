"""The faust shell every agent runs in: consume wrench.events, fold each task's state, run
the jobs its pure core decides on, publish their events, and report heartbeats.

An agent hands :class:`Worker` its ``evolve``, ``decide`` and ``run``; everything else is
here, the same for every agent.
"""

from processors.runtime._worker import Emit, Worker, dead_letter, faust_app, record_of

__all__ = ["Emit", "Worker", "dead_letter", "faust_app", "record_of"]
