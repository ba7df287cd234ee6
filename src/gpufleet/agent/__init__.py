"""The node agent: GPU discovery backends, host facts and the process runtime that runs jobs on a host.

The pieces here do no networking; the agent's server loop (registration, heartbeats, assignments,
log upload) wires them together.
"""
