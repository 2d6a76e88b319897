"""Serving https directly, when the server is given a certificate (``CALLBUTTON_TLS_CERT_FILE``).

Without one, the server speaks plain http: for development, or behind an https reverse proxy named
in ``CALLBUTTON_TRUSTED_PROXIES``.
"""

from __future__ import annotations

import ssl

from server.config import ConfigError, Settings


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for the configured certificate and key, or None when none is configured.

    Python's defaults for a server context (``ssl.create_default_context``: no compression, forward
    secret suites first), with TLS 1.2 as the oldest version accepted (RFC 9325 section 3.1.1).
    """
    if settings.tls_cert_file is None and settings.tls_key_file is None:
        return None
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        raise ConfigError("set both CALLBUTTON_TLS_CERT_FILE and CALLBUTTON_TLS_KEY_FILE, or neither")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    files = {"CALLBUTTON_TLS_CERT_FILE": settings.tls_cert_file, "CALLBUTTON_TLS_KEY_FILE": settings.tls_key_file}
    for name, path in files.items():
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None
    try:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"CALLBUTTON_TLS_CERT_FILE and CALLBUTTON_TLS_KEY_FILE are not a PEM certificate chain and its "
            f"private key ({exc.reason or exc})"
        ) from None
    return context
