"""The SDK, one mixin per area; `gpufleet.client.Client` puts them together."""
