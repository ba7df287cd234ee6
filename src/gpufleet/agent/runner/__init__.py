"""The Model Runner: the agent runs Cog models as replicas (docs/agent.md, "The Model Runner")."""
