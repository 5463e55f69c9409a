"""API handlers, one module per area; importing this package registers every route."""

from lab.pve.handlers import access, cluster, containers, nodes, storage, tasks  # noqa: F401
