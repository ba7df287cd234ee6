"""`python -m gpufleet.agent`: the node agent alone (what `gpufleet agent` runs)."""

from gpufleet.cli.agent import standalone

standalone()
