"""The InspectorAgent: it scores every agent output with a Bayesian quality model and watches
each task's progress, raising and clearing alerts.

- ``checks``: the checks of one output (its schema, per tool and per criterion, the
  reasoner's votes as a judge);
- ``quality``: the conjugate update, the decision, priors and Thompson draws (pure, fast);
- ``quality_fit``: the hierarchical fit (PyMC), run in a separate process;
- ``monitoring``: each task's events folded into a watch, and which alerts it calls for;
- ``alerts``: the alert handlers (a log line, a signed webhook);
- ``agent``: the pure core (``evolve``, ``decide``), the jobs and the worker entry,
  ``worker(settings)``.

Nothing is re-exported here: importing the quality model (as the SuperAgent does, and the
fit's own process) does not load the agent.
"""
