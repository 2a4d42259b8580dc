"""Upstream indexes: fetching and parsing what an upstream PEP 503/691 index says.

Upstream layer: fetching and parsing what an upstream index says; imports
domain/ and config only, never http/, admin/, storage/ or proxy/
(tests/test_layers.py checks it). `client.UpstreamClient` asks one upstream
for project pages and files; what the registry does with them is proxy/'s.
"""
