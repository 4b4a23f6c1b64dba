"""Every error ecst raises on purpose, in one tree.

    EcstError
    ├── ConfigError             a settings value or environment variable is wrong
    │   └── KafkaAuthenticationError    the brokers refused ecst's credentials (SASL), or the TLS
    │                                   handshake failed (certificate, CA, hostname)
    ├── KafkaCodecError         a record batch's codec cannot be decompressed here (a package
    │                           to install: names it; nothing of the batch is applied)
    ├── StackError              the local stack cannot be installed, started or reached
    │   ├── PortInUseError      a port the stack needs is taken by another process
    │   └── KafkaUnavailableError   Kafka cannot be reached at the bootstrap servers
    ├── DefinitionError         a connector YAML file is invalid (names file, line or key)
    ├── ProducerError           the producer database is unknown or unreachable, or lacks what a
    │                           command needs (a key for every captured table, a table to verify)
    │   └── SignalTableError    a snapshot signal could not be inserted into the signal table
    │                           (nothing was inserted; `auto` then signals through Kafka)
    ├── ConnectError            the Kafka Connect REST API failed or is unreachable
    │   ├── ConnectorFailedError    a connector or task went FAILED (carries the trace)
    │   └── ValidationError         Connect's validate endpoint rejected a config (per key)
    ├── EventError              a change event cannot be decoded or applied
    │   └── DeferredDecodeError     a row left to the database to decode cannot be decoded in
    │                               Python either (names its record; dead-lettered as at decode)
    ├── StateStoreError         the state database cannot be used as a state store
    │   ├── StateStoreUnavailableError  it cannot be reached right now (an outage: waited out)
    │   └── StaleStateError     a rebuild was swapped in since this store last looked (the
    │                           consumer re-reads the offsets and goes on: no user sees it)
    └── RebuildError            a re-bootstrap cannot start or go on (the shadow copy is kept)
        └── SnapshotFailedError     the connector cannot take the snapshot (a task FAILED), or
                                    Debezium rejected it (the shadow copy is discarded)

The CLI turns each of these into one line, `Error: …`, and exit code 1 (a ValidationError adds a
line per rejected key, a ConnectorFailedError the first lines of the worker's trace). Errors of
other libraries are turned into one of these where ecst meets them, `raise … from exc`: anything
else is a bug and keeps its traceback.
"""


class EcstError(Exception):
    """Base class of every deliberate ecst error."""


class ConfigError(EcstError):
    """A settings value or environment variable is missing or invalid."""


class KafkaAuthenticationError(ConfigError):
    """The Kafka brokers refused ecst's SASL credentials, or the TLS handshake with them failed: a
    setting to fix (kafka.security_protocol, kafka.sasl.*, kafka.ssl.*), not an outage to wait out."""


class KafkaCodecError(EcstError):
    """A record batch is compressed with a codec the installed Kafka client cannot decompress: a
    package to install beside ecst, not an outage to wait out."""


class StackError(EcstError):
    """The local stack cannot be installed, started, stopped or reached."""


class PortInUseError(StackError):
    """A port the local stack needs is already in use by another process."""


class KafkaUnavailableError(StackError):
    """Kafka cannot be reached at the bootstrap servers (refused, timed out, no broker answers).
    A StackError, so that code catching the stack's errors catches it too."""


class DefinitionError(EcstError):
    """A connector definition file is invalid; the message names the file and key or line."""


class ProducerError(EcstError):
    """The producer database is unknown or unreachable, or lacks what a command needs: e.g. a
    captured table without a primary key that message.key.columns does not cover, or a table
    `ecst verify` is asked to compare."""


class SignalTableError(ProducerError):
    """A snapshot signal could not be inserted into the connector's signal table, and nothing was
    inserted: the database not reached, the table or the INSERT grant missing."""


class ConnectError(EcstError):
    """The Kafka Connect REST API answered with an error or could not be reached."""


class ConnectorFailedError(ConnectError):
    """A connector or one of its tasks is FAILED; `trace` holds the worker's stack trace."""

    def __init__(self, message: str, trace: str | None = None) -> None:
        super().__init__(message)
        self.trace = trace


class ValidationError(ConnectError):
    """Kafka Connect rejected a connector config; `errors` maps each config key to its errors."""

    def __init__(self, message: str, errors: dict[str, list[str]]) -> None:
        lines = [message] + [f"  {key}: {msg}" for key, msgs in sorted(errors.items()) for msg in msgs]
        super().__init__("\n".join(lines))
        self.errors = errors


class EventError(EcstError):
    """A change event cannot be decoded or applied to the state store."""


class DeferredDecodeError(EventError):
    """A row whose decoding was left for the database (`events.decode(..., defer=...)`) cannot be
    decoded in Python after all: `where` names its record, `reason` is what decoding it said."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


class StateStoreError(EcstError):
    """The state database cannot be used (unsupported dialect, incompatible table)."""


class StateStoreUnavailableError(StateStoreError):
    """The state database cannot be reached right now (connection refused or lost, database not
    accepting connections, locked): an outage the consumer waits out, not a mistake to fix."""


class StaleStateError(StateStoreError):
    """The state was replaced (a rebuild was swapped in) since this store last looked."""


class RebuildError(EcstError):
    """A re-bootstrap cannot start or go on; the live state is untouched and the shadow copy is
    kept, so the same command resumes (or `--restart` discards it)."""


class SnapshotFailedError(RebuildError):
    """The connector cannot deliver the snapshot a rebuild waits for (a task FAILED, a lost slot),
    or Debezium rejected or aborted it (e.g. a filter its query could not run). Nothing will
    complete that rebuild, so its shadow copy is discarded: the next command starts afresh."""
