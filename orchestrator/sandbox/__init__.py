"""How an agent process is confined: namespaces, mounts and cgroup limits.

`confinement` is the run's policy (what is writable, protected, hidden; the limits),
`bwrap` turns it into a bubblewrap command line for one spawn, `cgroups` makes the memory
and pids limits of one agent, `support` probes once what this machine can do.
`orchestrator.process.spawn` is the only caller that starts anything with them.
"""
