"""Where an upstream's files may be fetched from: no private address on a page's say-so.

Upstream layer. An index's pages say where its files are, and the proxy
fetches them. Trusting the page with *any* address would let an upstream
(or whoever tampers with a plain-http one) send this daemon to what only
it can reach: `http://169.254.169.254/…` (a cloud's metadata service), an
admin port on 127.0.0.1, a name that resolves to 10.0.0.1. A file listed
without a sha256 is even fetched, hashed here and then served, which
would hand the response to the client.

So a URL on a host other than the index's own (and not in the upstream's
`file_hosts`) is connected to only at public addresses: its name is
resolved first, and loopback, private, link-local, shared, reserved,
multicast and unspecified addresses are dropped before any connection is
made, which also holds for names that resolve to such addresses and for
every redirect hop. The index's own host stays trusted: an admin put it in
the config, and an internal index serving its files itself is normal.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from ipaddress import IPv6Address, ip_address
from typing import Any

from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IReactorPluggableNameResolver,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from twisted.web.client import URI, BrowserLikePolicyForHTTPS
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

# Hosts whose addresses were all refused, remembered for the error message.
_REFUSED_HOSTS = 256


def is_public(address: str) -> bool:
    """Whether *address* (an IP literal) is one the public internet routes to."""
    try:
        ip = ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def normal_host(host: str) -> str:
    """*host* as config.py normalises `file_hosts` entries: lower case, or a normal address."""
    host = host.lower().rstrip(".")
    try:
        return str(ip_address(host.strip("[]")))
    except ValueError:
        return host


@implementer(IResolutionReceiver)
class _PublicOnly:
    """Passes on the public addresses of a resolution; notes the others."""

    def __init__(self, receiver: IResolutionReceiver, host: str, screen: PublicAddresses
                 ) -> None:
        self._receiver = receiver
        self._host = host
        self._screen = screen
        self._passed = 0
        self._refused: list[str] = []

    def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:  # noqa: N803
        self._receiver.resolutionBegan(resolutionInProgress)

    def addressResolved(self, address: IAddress) -> None:
        host = getattr(address, "host", "")
        if is_public(host):
            self._passed += 1
            self._receiver.addressResolved(address)
        else:
            self._refused.append(host)

    def resolutionComplete(self) -> None:
        if not self._passed and self._refused:
            self._screen.note_refused(self._host, self._refused)
        self._receiver.resolutionComplete()


@implementer(IHostnameResolver)
class _PublicResolver:
    def __init__(self, resolver: IHostnameResolver, screen: PublicAddresses) -> None:
        self._resolver = resolver
        self._screen = screen

    def resolveHostName(self, resolutionReceiver: IResolutionReceiver,  # noqa: N803
                        hostName: str, portNumber: int = 0,  # noqa: N803
                        addressTypes: Sequence[type[IAddress]] | None = None,  # noqa: N803
                        transportSemantics: str = "TCP") -> IHostResolution:  # noqa: N803
        return self._resolver.resolveHostName(
            _PublicOnly(resolutionReceiver, normal_host(hostName), self._screen), hostName,
            portNumber, addressTypes, transportSemantics)


@implementer(IReactorPluggableNameResolver)
class _ScreenedReactor:
    """The reactor, but for its name resolver: HostnameEndpoint resolves through it."""

    def __init__(self, reactor: Any, resolver: IHostnameResolver) -> None:
        self._reactor = reactor
        self.nameResolver = resolver

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        raise NotImplementedError("the screened resolver is fixed")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


class PublicAddresses:
    """Which hosts are trusted, and the resolver that screens the others."""

    def __init__(self, reactor: Any, trusted: frozenset[str]) -> None:
        self.trusted = trusted
        self.reactor = _ScreenedReactor(
            reactor, _PublicResolver(reactor.nameResolver, self))
        self._refused: OrderedDict[str, list[str]] = OrderedDict()

    def note_refused(self, host: str, addresses: list[str]) -> None:
        self._refused[host] = addresses
        self._refused.move_to_end(host)
        while len(self._refused) > _REFUSED_HOSTS:
            self._refused.popitem(last=False)

    def refused(self, host: str) -> list[str] | None:
        """The non-public addresses *host* resolved to, if that is all it resolved to."""
        return self._refused.pop(normal_host(host), None)


@implementer(IAgentEndpointFactory)
class ScreenedEndpoints:
    """Endpoints for an Agent: trusted hosts as usual, the others at public addresses only."""

    def __init__(self, reactor: Any, policy: BrowserLikePolicyForHTTPS,
                 screen: PublicAddresses) -> None:
        self._reactor = reactor
        self._policy = policy
        self._screen = screen

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        trusted = normal_host(uri.host.decode("ascii")) in self._screen.trusted
        reactor = self._reactor if trusted else self._screen.reactor
        endpoint: IStreamClientEndpoint = HostnameEndpoint(reactor, uri.host, uri.port)
        if uri.scheme == b"https":
            creator = self._policy.creatorForNetloc(uri.host, uri.port)
            endpoint = wrapClientTLS(creator, endpoint)
        return endpoint
