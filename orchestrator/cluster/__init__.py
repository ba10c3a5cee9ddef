"""The Ray executor: attempts run on a cluster's nodes while this process stays the driver.

`executor` (driver side) wraps each agent kind in a `RemoteAgent` that sends the attempt to
a `host.NodeHost` actor on a node and turns what comes back into the same events a local
attempt emits; `workspace` moves the workspace there and the change back as git bundles;
`wire` is what travels between them. Ray is imported only here, and only when a plan asks
for it (``executor: ray`` or ``run --cluster``).
"""
