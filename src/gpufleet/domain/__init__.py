"""The domain: frozen value types and enumerations shared by every layer; no I/O here.

One module per aggregate; import a name from its module:
``costs``: Prices, usage, cost and budgets.
``events``: The events outbox's rows.
``execution``: Running the work on hosts: assignments, exit reports, logs, reconciliation, the execution policy.
``hosts``: Hosts and their GPUs: the records, what agents report (facts, samples), join tokens, fleet views.
``jobs``: Jobs: their status, what they ask for (the spec), allocations, and pages of them.
``models``: Models, their versions and hardware (the inference half).
``predictions``: Predictions: their status, inputs and outputs, and deployments' queue.
``quotas``: Quotas and their usage.
``tenancy``: Organisations, users, memberships and roles.
"""
