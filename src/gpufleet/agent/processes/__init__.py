"""Jobs as processes on this host: starting, watching, stopping and adopting them.

``runtime`` (``ProcessRuntime``, the agent's side), ``launch`` (one job's work dir, environment
and supervisor), ``launcher`` (the long-lived process that forks supervisors), ``shim`` (the
supervisor itself, run by path under ``python -I -S``), ``proc`` (process facts, exit files),
``logs`` (capturing output in order), ``users`` (job users and slots).
"""
