"""The upstream proxy: one index URL for private packages and their public dependencies.

Composition of upstream/ (fetching and parsing what an upstream says) and
storage/ (cached pages, files, origin locks): which source serves a name,
how fresh a cached page must be, and files fetched through. It imports
neither http/ nor admin/ (tests/test_layers.py checks it).
"""
