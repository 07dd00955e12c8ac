"""Whether a server can be reached at all, asked in a second or three before a stage that
needs it starts: behind a firewall the HTTP stacks retry for minutes before they fail (the
Hugging Face Hub: 97 s measured with DNS failing), and the user deserves one sentence first."""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit

#: Seconds a probe waits for a TCP connection.
PROBE_TIMEOUT_S = 3.0


def reachable(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``endpoint`` (or the proxy the HTTP stack would use) opens within
    ``timeout``; run in a thread because DNS lookups ignore socket timeouts."""
    from urllib.request import getproxies, proxy_bypass

    url = urlsplit(endpoint)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    proxies = getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and host and not proxy_bypass(host):
        parsed = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if parsed.port is None:
            return True  # unknown proxy port: let the HTTP stack try
        host, port = parsed.hostname, parsed.port
    if not host:
        return True
    result: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout)
    return bool(result and result[0])
