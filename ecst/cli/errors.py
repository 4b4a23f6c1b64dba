"""Errors met at the CLI's edge (other libraries', or an outage a one-shot command cannot wait out)
turned into ecst's own, each one line saying what to do."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kafka.errors import KafkaConnectionError, KafkaTimeoutError, MetadataEmptyBrokerList, NodeNotReadyError

from ecst.consumer.store import normalize_url
from ecst.exceptions import KafkaUnavailableError, StateStoreError, StateStoreUnavailableError
from ecst.kafka import KafkaSettings, as_settings
from ecst.settings import mask_url

STATE_URL_FIX = "fix --state-url (state.url in the consumer YAML, or ECST_STATE_URL)"
STATE_FIX = f"check that it is running and reachable from here, or {STATE_URL_FIX}"


@contextmanager
def one_shot_state(fix: str = STATE_FIX) -> Iterator[None]:
    """A state database that cannot be reached ends a one-shot command (the consumer waits such an
    outage out; a command does not): its error then says what to do, `fix`."""
    try:
        yield
    except StateStoreUnavailableError as exc:
        raise StateStoreUnavailableError(f"{exc}: {fix}") from exc  # same class: same meaning


def ensure_state_folder(url: str) -> None:
    """Create the folder of a SQLite state file (what opening the store does anyway), or raise a
    StateStoreError naming it when it cannot be created."""
    try:
        normalize_url(url)
    except OSError as exc:
        folder = exc.filename or "its folder"
        raise StateStoreError(f"state URL {mask_url(url)}: cannot create the folder {folder} "
                              f"({exc.strerror or exc}): {STATE_URL_FIX}") from exc


@contextmanager
def kafka_errors(bootstrap: KafkaSettings | str, then: str = "") -> Iterator[None]:
    """Kafka not answering at `bootstrap` (kafka-python's errors saying no broker could be reached in
time) is a KafkaUnavailableError; its message ends with `then`."""
    try:
        yield
    except (KafkaTimeoutError, KafkaConnectionError, NodeNotReadyError, MetadataEmptyBrokerList) as exc:
        raise KafkaUnavailableError(
            f"couldn't connect to Kafka at {as_settings(bootstrap).describe()}: "
            f"{' '.join(str(exc).split())}: is it running? "
            f"(`ecst stack status`, or pass --bootstrap-servers){then}") from exc
