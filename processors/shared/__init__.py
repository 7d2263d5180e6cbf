"""What more than one agent (or the API) uses: the role catalog (``roles.yaml``), the
playbooks (``playbooks/*.yaml``), the plan and its stages with their fallbacks, the price
table, and the toolbox that builds the tool registry from settings.

The modules are imported by name (``processors.shared.planning`` …); nothing is re-exported
here, so importing one does not load the others.
"""
