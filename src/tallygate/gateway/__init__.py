"""The OpenAI-compatible gateway: routes, upstream client, streaming, limits, metering."""
