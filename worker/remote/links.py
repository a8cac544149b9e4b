"""Which links from a reply the client follows: ``@odata.nextLink`` and ``@odata.deltaLink``
(and a delta link stored by an earlier pass) only when they point at the connection's own
origin, and a read's pages only up to ``max_pages``.

A link is followed with the connection's ``Authorization`` header, so a link to another
scheme, host or port would hand the token to whoever answers there: one hostile or
tampered reply would be enough, and a stored delta link would repeat the leak on every
later pass. Such a link is a protocol error naming the origin it points at (never the
token); https is never downgraded to http.
"""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

from worker.remote.errors import RemoteProtocolError, origin_of


def same_origin(url: str, service_url: str) -> bool:
    """``url`` has the scheme, host and port of ``service_url`` (default ports written
    out, host names compared without case)."""
    try:
        return (urlsplit(url).scheme.lower() == urlsplit(service_url).scheme.lower()
                and origin_of(url).lower() == origin_of(service_url).lower())
    except ValueError:
        return False


def resolve(link: str, current: str, service_url: str, *, what: str) -> str:
    """``link`` (absolute or relative to ``current``) as an absolute URL on the service's
    origin; RemoteProtocolError naming the other origin otherwise."""
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in link):
        raise RemoteProtocolError(f"the service sent an {what} with control characters or "
                                  "spaces", method="GET", path=urlsplit(current).path)
    url = urljoin(current, link)
    if not same_origin(url, service_url):
        raise RemoteProtocolError(
            f"the service sent an {what} to another origin ({_origin_text(url)}); only "
            f"links to {origin_of(service_url)} are followed, since they carry the "
            "connection's credentials", method="GET", path=urlsplit(current).path,
            origin=origin_of(service_url))
    return url


def _origin_text(url: str) -> str:
    try:
        return origin_of(url)
    except ValueError:
        return "an unreadable address"


class Pager:
    """The links of one paged read: each next link resolved on the service's origin, a
    repeated link refused (the service would answer the same page forever), and at most
    ``max_pages`` pages (a service sending a new link forever is followed no further)."""

    def __init__(self, service_url: str, max_pages: int, path: str) -> None:
        self.service_url = service_url
        self.max_pages = max_pages
        self.path = path
        self.pages = 0
        self._seen: set[str] = set()

    def page_read(self) -> None:
        self.pages += 1

    def next_url(self, link: object, current: str, status: int) -> str | None:
        """The URL of the next page, or None when ``link`` is absent."""
        if not isinstance(link, str) or not link:
            return None
        url = resolve(link, current, self.service_url, what="@odata.nextLink")
        if url in self._seen:
            raise RemoteProtocolError(
                f"the service sent the same @odata.nextLink twice (after page {self.pages})",
                status=status, method="GET", path=self.path)
        if self.pages >= self.max_pages:
            raise RemoteProtocolError(
                f"the read has more than max_pages {self.max_pages} pages; raise max_pages "
                "of the connection if the service really holds that many", status=status,
                method="GET", path=self.path)
        self._seen.add(url)
        return url
