#!/usr/bin/env python3
"""Mint a 15-minute pypireg upload token in a CI job, for twine (standard library only).

uv does trusted publishing by itself; twine does it only against the public
index. This does the exchange uv does, and prints the minted token:

    export TWINE_USERNAME=__token__
    export TWINE_PASSWORD="$(python3 mint-token.py https://pypi.example.com)"
    twine upload --repository-url https://pypi.example.com/api/v4/projects/1/packages/pypi dist/*

GitHub Actions (the job needs `permissions: id-token: write`): the ID token
is requested from ACTIONS_ID_TOKEN_REQUEST_URL. GitLab CI: from the
variable `id_tokens:` sets, named after the audience (`PYPIREG_ID_TOKEN`
for "pypireg"). The token is never printed anywhere but standard output.
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

TIMEOUT = 30


def _json(request: urllib.request.Request | str) -> Any:
    with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:  # noqa: S310 (https)
        return json.load(answer)


def id_token(audience: str) -> str:
    request_url = os.environ.get("ACTIONS_ID_TOKEN_REQUEST_URL")
    if request_url:
        url = f"{request_url}&audience={urllib.parse.quote(audience, safe='')}"
        bearer = os.environ["ACTIONS_ID_TOKEN_REQUEST_TOKEN"]
        return str(_json(urllib.request.Request(
            url, headers={"Authorization": f"bearer {bearer}"}))["value"])
    variable = re.sub(r"[^A-Z0-9]", "_", audience.upper()) + "_ID_TOKEN"
    if variable not in os.environ:
        sys.exit(f"mint-token: no ID token: neither ACTIONS_ID_TOKEN_REQUEST_URL (GitHub "
                 f"Actions, `permissions: id-token: write`) nor {variable} (GitLab CI, "
                 f"`id_tokens: {variable}: aud: {audience}`) is set")
    return os.environ[variable]


def main() -> None:
    if len(sys.argv) != 2 or not sys.argv[1].startswith("https://"):
        sys.exit("usage: mint-token.py https://REGISTRY-HOST[:PORT]")
    registry = sys.argv[1].rstrip("/")
    audience = _json(f"{registry}/_/oidc/audience")["audience"]
    request = urllib.request.Request(
        f"{registry}/_/oidc/mint-token", method="POST",
        data=json.dumps({"token": id_token(audience)}).encode(),
        headers={"Content-Type": "application/json"})
    try:
        minted = _json(request)
    except urllib.error.HTTPError as e:
        sys.exit(f"mint-token: refused ({e.code}): {e.read().decode(errors='replace')}")
    print(minted["token"])


if __name__ == "__main__":
    main()
