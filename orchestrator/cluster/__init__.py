"""The Ray executor: attempts run on a cluster's nodes while this process stays the driver.

`nodes` is the run's connection to the cluster (a `host.NodeHost` actor per node, node
loss, leaving the cluster clean); `executor` wraps each agent kind in a `RemoteAgent` that
sends an attempt to a host and turns what comes back into the events a local attempt
emits; `workspace` moves the workspace to the nodes and the changes back as git bundles;
`wire` is what travels between them. Ray is imported only in `nodes`, and only when a plan
asks for it (``executor: ray`` or ``run --cluster``).
"""
