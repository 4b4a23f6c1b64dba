"""Why logging in to a Kafka broker fails: one TLS handshake and one SASL exchange, made by hand.

kafka-python retries a refused login until its timeout and then says only that it could not
bootstrap (and its SSL transport may see the broker's close before the broker's answer), so
ecst.kafka asks here, once, after such a failure: the answer is the TLS error or the broker's
SASL error message, or None when the login works or the broker cannot be reached at all (an
outage, not a setting). Blocking sockets, kafka-python's protocol classes and SASL mechanisms.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from kafka.errors import SaslAuthenticationFailedError

from ecst.kafka_security import KafkaSecurity


def login_failure(server: str, security: KafkaSecurity, timeout_s: float = 10.0) -> BaseException | None:
    """An ssl.SSLError or a SaslAuthenticationFailedError saying why logging in to `server`
    (`host:port`) with `security` fails; None if it works or nothing answers."""
    host, _, port = server.rpartition(":")
    host = host.strip("[]")
    try:
        sock: Any = socket.create_connection((host, int(port)), timeout=timeout_s)
    except OSError:
        return None
    try:
        if security.ssl:
            context = ssl.create_default_context(cafile=security.cafile)
            context.check_hostname = security.check_hostname
            if security.certfile:
                context.load_cert_chain(security.certfile, security.keyfile)
            sock = context.wrap_socket(sock, server_hostname=host)
        if security.sasl:
            return _sasl(sock, security, host)
        return None
    except ssl.SSLError as exc:
        return exc
    except SaslAuthenticationFailedError as exc:
        return exc
    except Exception:  # a diagnosis only: never hide the error being diagnosed
        return None
    finally:
        sock.close()


def _sasl(sock: Any, security: KafkaSecurity, host: str) -> BaseException | None:
    from kafka.net.sasl import get_sasl_mechanism
    from kafka.protocol.parser import KafkaProtocol
    from kafka.protocol.sasl import SaslAuthenticateRequest, SaslHandshakeRequest

    protocol = KafkaProtocol(client_id="ecst-login-check")

    def call(request: Any) -> Any:
        protocol.send_request(request)
        sock.sendall(protocol.send_bytes())
        while True:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("the broker closed the connection")
            responses = protocol.receive_bytes(data)
            if responses:
                return responses[0][1]

    mechanisms = call(SaslHandshakeRequest(mechanism=security.mechanism, version=1))
    if mechanisms.error_code:
        return SaslAuthenticationFailedError(
            f"the broker does not offer {security.mechanism} on this listener (it offers "
            f"{', '.join(mechanisms.mechanisms) or 'none'})")
    mechanism = get_sasl_mechanism(security.mechanism)(
        host=host, sasl_mechanism=security.mechanism, sasl_plain_username=security.username,
        sasl_plain_password=security.password.reveal() if security.password else None,
        security_protocol=security.protocol)
    while not mechanism.is_done():
        answer = call(SaslAuthenticateRequest(mechanism.auth_bytes(), version=1))
        if answer.error_code:
            return SaslAuthenticationFailedError(answer.error_message or "authentication failed")
        mechanism.receive(answer.auth_bytes)
    return None if mechanism.is_authenticated() else SaslAuthenticationFailedError("authentication failed")
