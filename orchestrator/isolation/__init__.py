"""Per-agent checkouts and the integration of their work.

Every agent that writes runs in a checkout of its own: a git worktree from a bounded, reused
pool outside the user's tree (`pool`), based on the run's integration ref at the moment it
starts. What it leaves is sealed into a commit (`seal`), landed one task at a time by an
in-memory merge and a compare-and-swap of the integration ref (`landing`), and delivered at
the end as a branch or applied to the user's checkout when that is safe (`delivery`).
A folder that is not a repository gets a shadow repository outside it (`repo`). `gc` is the
only thing that removes checkouts or branches. `checkouts` is the one seam the engine uses.
"""
