"""The broker's HTTP API (aiohttp): routes, JSON codec, errors at the edge, metrics, OpenAPI."""
