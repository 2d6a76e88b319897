"""TLS between the nodes of a cluster, with nothing to configure: a certificate authority of the
cluster's own, derived from the master key.

Every node derives the same Ed25519 key from the master key (``Keyring.derive``) and makes the
same authority's certificate with it (every field fixed, and Ed25519 signatures are
deterministic). At start, each node makes a key pair of its own and a certificate for it, signed by
that authority. A node's internal listener speaks only TLS 1.3 and asks for the other side's
certificate; the node relaying to it checks the listener's. Either side accepts only a certificate
the cluster's authority signed: only a holder of the master key can take part. So what crosses
between nodes (relayed signalling, with visitors' form data and agents' cookies) is encrypted; a
signed request cannot be replayed by whoever sees the network; and a node address written into
Redis by someone else (``docs/scaling.md``, "Trust between nodes") gets no cookie from a node.

Names are not checked (a node's address is whatever the others can reach it by): the authority's
signature is what says that the other side is a node of this cluster.
"""

from __future__ import annotations

import datetime
import os
import secrets
import ssl
import tempfile
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_AUTHORITY_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "callbutton cluster authority")])
# Fixed, so that every node makes the same certificate; an authority never served to anyone outside
# the cluster, whose key changes only with the master key.
_AUTHORITY_FROM = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
_AUTHORITY_UNTIL = datetime.datetime(2124, 1, 1, tzinfo=datetime.UTC)
#: A node's certificate is made at each start; it outlives any run.
_NODE_VALIDITY = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class ClusterTLS:
    """This node's TLS contexts for its internal listener (``server``) and its requests to the other
    nodes (``client``)."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    authority_pem: bytes


def authority(seed: bytes) -> tuple[ed25519.Ed25519PrivateKey, x509.Certificate]:
    """The cluster authority's key and certificate, made from 32 secret bytes (the same on every node)."""
    if len(seed) != 32:
        raise ValueError("the authority's seed is 32 bytes")
    key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_AUTHORITY_NAME)
        .issuer_name(_AUTHORITY_NAME)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(_AUTHORITY_FROM)
        .not_valid_after(_AUTHORITY_UNTIL)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(authority=True), critical=True)
        # Key identifiers, which strict verification (VERIFY_X509_STRICT) requires.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, None)
    )
    return key, certificate


def for_node(seed: bytes, node: str) -> ClusterTLS:
    """A fresh key and certificate for ``node``, signed by the cluster's authority, and the contexts
    that use them."""
    authority_key, authority_certificate = authority(seed)
    key = ed25519.Ed25519PrivateKey.generate()
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"callbutton node {node}"[:64])]))
        .issuer_name(_AUTHORITY_NAME)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))  # a clock a little behind another's
        .not_valid_after(now + _NODE_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(authority=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(authority_key.public_key()), critical=False)
        .sign(authority_key, None)
    )
    authority_pem = authority_certificate.public_bytes(serialization.Encoding.PEM)
    chain = certificate.public_bytes(serialization.Encoding.PEM)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ClusterTLS(
        server=_context(ssl.PROTOCOL_TLS_SERVER, chain, private, authority_pem),
        client=_context(ssl.PROTOCOL_TLS_CLIENT, chain, private, authority_pem),
        authority_pem=authority_pem,
    )


def _usage(*, authority: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not authority,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=authority,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _context(protocol: int, chain: bytes, private: bytes, authority_pem: bytes) -> ssl.SSLContext:
    context = ssl.SSLContext(protocol)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED  # both ways: a listener asks for the caller's certificate too
    context.check_hostname = False  # set after verify_mode: a client context starts with it on
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.load_verify_locations(cadata=authority_pem.decode())
    _load_chain(context, chain, private)
    return context


def _load_chain(context: ssl.SSLContext, chain: bytes, private: bytes) -> None:
    """``load_cert_chain`` reads files only: the key goes through a file only this process can read,
    removed at once."""
    with tempfile.TemporaryDirectory(prefix="callbutton-cluster-tls-") as folder:
        path = os.path.join(folder, f"node-{secrets.token_hex(4)}.pem")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(private + chain)
        context.load_cert_chain(path)
