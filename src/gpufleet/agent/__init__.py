"""The node agent: GPU discovery backends, host facts and the process runtime that runs jobs on a host.

The agent pulls: ``loop.py`` registers, sends heartbeats, takes assignments and ships logs, and
every call to the server goes through ``server_api.py``. ``runner/`` serves models to the replicas it
starts; discovery (``gpus/``, ``hostinfo.py``) and the process runtime (``runtime*.py``) stay local.
"""
