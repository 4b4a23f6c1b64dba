"""The local stack's secure profile (`ecst stack up --secure`): a SASL_SSL listener beside PLAINTEXT.

The broker keeps its PLAINTEXT listener (Connect, Debezium and everything else use it) and gains
one on ECST_KAFKA_SECURE_PORT (default 19094) that takes TLS with SCRAM-SHA-512 or PLAIN logins.
Made once per home, under `<home>/secure/` (owner-only): a CA and the broker's certificate
(openssl; the broker's key in a PKCS12 keystore), and the user `ecst` with a generated password.
The SCRAM credential is created over the PLAINTEXT listener through the broker's own
AlterUserScramCredentials API (what `kafka-configs --alter --add-config 'SCRAM-SHA-512=[...]'`
calls), from Python: the password is never on a command line, and it works on a cluster formatted
before the profile was turned on (`kafka-storage format --add-scram` works only on a fresh format). The
profile stays on for the home until `ecst stack up --no-secure`.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from pathlib import Path

from ecst.exceptions import StackError
from ecst.kafka_security import KafkaSecurity
from ecst.settings import Secret, register_secret
from ecst.stack.private import UMASK, private_dir, write_private

USER = "ecst"
MECHANISM = "SCRAM-SHA-512"
LISTENER = "SASL_SSL"


class SecureListener:
    """The SASL_SSL listener's files and credentials in one stack home."""

    def __init__(self, home: Path, port: int) -> None:
        self.dir = home / "secure"
        self.port = port
        self.state = self.dir / "secure.json"

    @property
    def enabled(self) -> bool:
        return self.state.exists()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def cafile(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def keystore(self) -> Path:
        return self.dir / "broker.p12"

    def _secrets(self) -> dict[str, str]:
        try:
            values: dict[str, str] = json.loads(self.state.read_text())
        except (OSError, ValueError) as exc:
            raise StackError(f"cannot read the secure profile's {self.state} ({exc}): remove "
                             f"{self.dir} and run `ecst stack up --secure` again") from exc
        for value in values.values():
            register_secret(value)
        return values

    @property
    def password(self) -> Secret:
        """The password of the user `ecst` (masked wherever it is printed)."""
        return Secret(self._secrets()["password"])

    def security(self) -> KafkaSecurity:
        """How a client logs in on this listener: SASL_SSL, SCRAM-SHA-512, user ecst, this CA."""
        return KafkaSecurity(protocol=LISTENER, mechanism=MECHANISM, username=USER,
                             password=self.password, cafile=str(self.cafile))

    def enable(self) -> bool:
        """Make the CA, the broker's keystore and the password, unless they exist. True if made."""
        if self.enabled and self.cafile.exists() and self.keystore.exists():
            return False
        if shutil.which("openssl") is None:
            raise StackError("openssl not found: the secure profile makes its certificates with it; "
                             "install it (`apt-get install openssl`) and re-run `ecst stack up --secure`")
        private_dir(self.dir)
        values = {"password": secrets.token_urlsafe(18), "keystore_password": secrets.token_urlsafe(18)}
        for value in values.values():
            register_secret(value)
        d, ks_pw = self.dir, values["keystore_password"]
        ext = d / "broker.ext"
        write_private(ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                           "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                           "extendedKeyUsage=serverAuth\n")
        pw_file = d / "keystore.pass"
        write_private(pw_file, ks_pw)
        self._openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                      "-subj", "/CN=ecst local stack CA", "-keyout", d / "ca.key", "-out", self.cafile)
        self._openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                      "-keyout", d / "broker.key", "-out", d / "broker.csr")
        self._openssl("x509", "-req", "-in", d / "broker.csr", "-CA", self.cafile, "-CAkey", d / "ca.key",
                      "-CAcreateserial", "-days", "3650", "-extfile", ext, "-out", d / "broker.crt")
        self._openssl("pkcs12", "-export", "-in", d / "broker.crt", "-inkey", d / "broker.key",
                      "-certfile", self.cafile, "-name", "broker", "-out", self.keystore,
                      "-passout", f"file:{pw_file}")
        for name in ("broker.csr", "broker.ext", "ca.srl", "keystore.pass"):
            (d / name).unlink(missing_ok=True)
        write_private(self.state, json.dumps(values))
        return True

    def _openssl(self, *args: object) -> None:
        result = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, umask=UMASK)
        if result.returncode != 0:
            raise StackError(f"openssl {args[0]} failed making the secure profile's certificates in "
                             f"{self.dir}: {result.stderr.strip()[-400:]}")

    def disable(self) -> bool:
        """Forget the profile (its files are removed). True if it was on."""
        if not self.dir.exists():
            return False
        shutil.rmtree(self.dir)
        return True

    def broker_properties(self, plain_port: int, controller_port: int) -> dict[str, object]:
        """server.properties entries for both listeners (and the controller's)."""
        values = self._secrets()
        prefix = f"listener.name.{LISTENER.lower()}"
        return {
            "listeners": f"PLAINTEXT://127.0.0.1:{plain_port},{LISTENER}://127.0.0.1:{self.port},"
                         f"CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{plain_port},{LISTENER}://127.0.0.1:{self.port}",
            "listener.security.protocol.map":
                f"PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,{LISTENER}:{LISTENER}",
            f"{prefix}.sasl.enabled.mechanisms": f"{MECHANISM},PLAIN",
            f"{prefix}.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            f"{prefix}.plain.sasl.jaas.config":
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'user_{USER}="{values["password"]}";',
            f"{prefix}.ssl.keystore.type": "PKCS12",
            f"{prefix}.ssl.keystore.location": self.keystore,
            f"{prefix}.ssl.keystore.password": values["keystore_password"],
            f"{prefix}.ssl.key.password": values["keystore_password"],
        }

    def create_user(self, plain_bootstrap: str) -> None:
        """Create (or reset) the SCRAM credential of `ecst` through the broker's
        AlterUserScramCredentials API (what kafka-configs calls) over the PLAINTEXT listener."""
        from kafka.admin import UserScramCredentialUpsertion

        from ecst import kafka

        settings = kafka.as_settings(plain_bootstrap)
        admin = kafka.admin(settings)
        try:
            with kafka.reaching(settings, f"create the SCRAM user {USER} on"):
                errors = admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
                    USER, MECHANISM, self._secrets()["password"], iterations=8192)])
        finally:
            admin.close()
        if errors.get(USER):
            raise StackError(f"creating the SCRAM user {USER} failed: {errors[USER]}")
