"""The registry's icon, served at /favicon.ico.

HTTP layer. A white "p" on the pages' header colour, with an orange shelf,
drawn once (4x supersampled, 16 and 32 px) and kept here as bytes: a PNG of
each size inside an ICO container (the format every browser reads at
/favicon.ico, Safari included, which takes no SVG there), under 1 KiB.
Answering 404 instead would make browsers ask again on every page, and
204 would leave the tab without an icon.
"""

from __future__ import annotations

import base64
import hashlib

from twisted.web.iweb import IRequest

from pypireg.http.responses import not_modified

ICON = base64.b64decode(
    "AAABAAIAEBAAAAEAIAD2AAAAJgAAACAgAAABACAAnAEAABwBAACJUE5HDQoaCgAAAA1JSERSAAAAEAAAABAIBgAA"
    "AB/z/2EAAAC9SURBVHjaY2AAAnkt8wYgfg/E/4nEILUNDEia/5OJGxhItBnDJQzogv1TZoMxiB0enwnnW7sGYDUE"
    "wwAYWL1+y390UFzVRLwBIPDx06f/je19/+cuWgEXQ3cJXgNSc8vg4jBDQAZSZAAsfIgy4Or1W2BDQH4HeYckL+zc"
    "cwAjENGdj9cAEBtkMyg2QM4HRSlJ0UhsYiJoQLW7xP+ZgXxwDOKjG/AeV0oE4Rg7pf8FLjJwDOKjJ2XKMhOl2RkA"
    "KC3zm5JqxTsAAAAASUVORK5CYIKJUE5HDQoaCgAAAA1JSERSAAAAIAAAACAIBgAAAHN6evQAAAFjSURBVHjaY2BA"
    "AvJa5g5AvB6I3wPxfyrj91CzHRjQAVBQAIjn08BSXBhklwCyA+hpOdwRyMH+f4CwAwM0XgbKAesZaJTgiE6YDANo"
    "ORgTdAAyOH7qLFy8uKrp/849B1DkHz959n/1+i3/rV0DaOcAXXMXMI0PfPz0CexAmjjg6vVb/4kFqbll1HUALt/i"
    "chhIDhRiNHMAKL6RLQiPzwRbigwa2/to4wDkBImMQY4gRh3FDuifMptoPcPTAcRGAShx0iwRoicwUAGEnhvmLlpB"
    "22wIshAUHaAcgZ4DQIBQqUiSA0CWkVIQEcqCZJWE2IKZ1ERKcWUEKnxAFoAqH2yJE5QQaV4bwrBnUAzYQhAmVOzS"
    "xAED1h4YNA6wM9H9PzOQDy+OsVOinQM8zDX/H4pjwIsLXGTwOuD9ADrgPcFmOSyFgzAoxaPLa+qagB2BDxsbGOBt"
    "lg9sx2TAu2aDonM6kN1zAATxybR30g5CAAAAAElFTkSuQmCC"
)
CONTENT_TYPE = b"image/x-icon"
# A month: long enough that browsers stop asking, short enough that a new
# icon reaches them; after that the ETag makes the check a 304.
CACHE_CONTROL = b"public, max-age=2592000"
ETAG = b'"' + hashlib.sha256(ICON).hexdigest()[:32].encode() + b'"'


def favicon(request: IRequest) -> bytes:
    """The icon (GET and HEAD), or 304 when the client's copy is this one."""
    request.setHeader(b"Cache-Control", CACHE_CONTROL)
    if not_modified(request, ETAG):
        return b""
    request.setHeader(b"Content-Type", CONTENT_TYPE)
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    return ICON
