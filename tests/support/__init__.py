"""Helpers shared by the test modules; fixtures stay in tests/conftest.py.

- `databases`: fresh PostgreSQL databases cloned from a migrated template.
- `http`: the in-process registry (real TCP, or in memory with StubTreq),
  Basic credentials, projects with tokens, the upload helper.
- `raw`: raw request bytes through the real site over a StringTransport.
- `daemon`: the real `twistd -n pypireg` in a folder of its own, and twine.
- `waiting`: waiting on a condition a bounded number of reactor turns.
- `upstreams`: a local upstream index on 127.0.0.1 whose answers are set per
  path (pages, files, redirects, timeouts, dropped connections).
- `oidc`: a local OIDC issuer (keys, discovery, JWKS, rotation), GitHub
  Actions' ID-token endpoint stand-in, and a test CA with a leaf for TLS.

Test modules import helpers from here (and distributions from
tests.distributions), never from one another.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor as _reactor

# The global reactor, typed loosely: pytest-twisted runs it for the whole session.
reactor: Any = _reactor
