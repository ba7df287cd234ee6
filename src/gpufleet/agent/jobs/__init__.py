"""The agent's job loop: what it runs for the server and what it reports back.

``runner`` (``JobRunner``: assignments in, one supervisor task per run), ``run`` (one (job,
attempt) as the loop tracks it), ``restart`` (adoption and reconciliation after an agent restart),
``reporter`` (starts, log uploads and exits sent together per host).
"""
