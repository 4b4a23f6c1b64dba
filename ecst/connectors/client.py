"""A small Kafka Connect REST client on `requests`, with errors a person can act on."""

from __future__ import annotations

import time
from typing import Any

import requests

from ecst.exceptions import ConfigError, ConnectError
from ecst.settings import mask_url

NOT_FOUND = object()  # what `request(..., ok_404=True)` returns for an HTTP 404


def _rebalancing(r: requests.Response) -> bool:
    """409 (a rebalance in progress, no leader), or a 500 whose message says a rebalance is
    expected (a worker between generations answers so): both pass, so both are retried."""
    if r.status_code == 409:
        return True
    return r.status_code == 500 and "rebalance" in r.text.lower()


class ConnectClient:
    """Talks to one Kafka Connect cluster. A rebalance in progress (409, or a 500 saying one is
    expected) is retried with backoff."""

    def __init__(
        self,
        url: str,
        *,
        auth: tuple[str, str] | None = None,
        timeout_s: float = 15.0,
        retries_409: int = 8,
    ) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.auth = auth
        self.session.headers.update({"Accept": "application/json"})
        self.timeout_s = timeout_s
        self.retries_409 = retries_409

    def request(self, method: str, path: str, *, json: Any = None, ok_404: bool = False) -> Any:
        """One REST call: the decoded JSON body, None when empty, NOT_FOUND on 404 if ok_404."""
        delay = 0.5
        for attempt in range(self.retries_409 + 1):
            try:
                r = self.session.request(method, self.url + path, json=json, timeout=self.timeout_s)
            except requests.ConnectionError as exc:
                raise ConnectError(
                    f"Couldn't connect to Kafka Connect at {self.url}: is it running? "
                    "(`ecst stack status`, or pass --connect-url)"
                ) from exc
            except requests.Timeout as exc:
                raise ConnectError(
                    f"Kafka Connect at {self.url} did not answer {method} {path} "
                    f"within {self.timeout_s:.0f} s"
                ) from exc
            except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                    requests.exceptions.InvalidSchema) as exc:
                raise ConfigError(
                    f"Kafka Connect URL {mask_url(self.url)!r} is not an http(s) URL: use "
                    "http://HOST:PORT (--connect-url, ECST_CONNECT_URL, or the context's url)"
                ) from exc
            except requests.RequestException as exc:  # e.g. too many redirects, a broken response
                raise ConnectError(
                    f"{method} {path} to Kafka Connect at {self.url} failed: {mask_url(str(exc))}"
                ) from exc
            if _rebalancing(r) and attempt < self.retries_409:
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            break
        if r.status_code == 404 and ok_404:
            return NOT_FOUND
        if r.status_code == 401:
            raise ConnectError(
                f"Kafka Connect at {self.url} says the configured user is unauthorized (401): "
                "check the basic-auth credentials"
            )
        if r.status_code >= 400:
            try:
                message = r.json().get("message") or r.text
            except ValueError:
                message = r.text
            raise ConnectError(f"{method} {path} failed with HTTP {r.status_code}: {message.strip()}")
        if r.status_code == 204 or not r.content:
            return None
        try:
            return r.json()
        except ValueError as exc:
            raise ConnectError(f"{method} {path}: Kafka Connect answered non-JSON: {r.text[:200]}") from exc

    # -- endpoints ------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return self.request("GET", "/")

    def connectors(self) -> list[str]:
        return sorted(self.request("GET", "/connectors"))

    def get_config(self, name: str) -> dict[str, str] | None:
        found = self.request("GET", f"/connectors/{name}/config", ok_404=True)
        return None if found is NOT_FOUND else found

    def put_config(self, name: str, config: dict[str, str]) -> dict[str, Any]:
        return self.request("PUT", f"/connectors/{name}/config", json=config)

    def status(self, name: str) -> dict[str, Any] | None:
        found = self.request("GET", f"/connectors/{name}/status", ok_404=True)
        return None if found is NOT_FOUND else found

    def delete(self, name: str) -> bool:
        """Delete a connector; False if it did not exist."""
        return self.request("DELETE", f"/connectors/{name}", ok_404=True) is not NOT_FOUND

    def pause(self, name: str) -> None:
        self.request("PUT", f"/connectors/{name}/pause")

    def resume(self, name: str) -> None:
        self.request("PUT", f"/connectors/{name}/resume")

    def restart(self, name: str, *, only_failed: bool = False) -> Any:
        """Restart the connector and its tasks (KIP-745), or only the failed ones."""
        flags = f"includeTasks=true&onlyFailed={'true' if only_failed else 'false'}"
        return self.request("POST", f"/connectors/{name}/restart?{flags}")

    def stop(self, name: str) -> None:
        """Stop a connector (KIP-875): tasks shut down, config and offsets kept."""
        self.request("PUT", f"/connectors/{name}/stop")

    def offsets(self, name: str) -> dict[str, Any]:
        return self.request("GET", f"/connectors/{name}/offsets")

    def alter_offsets(self, name: str, offsets: list[dict[str, Any]]) -> None:
        """Overwrite a stopped connector's offsets of the partitions given (KIP-875 PATCH)."""
        self.request("PATCH", f"/connectors/{name}/offsets", json={"offsets": offsets})

    def reset_offsets(self, name: str) -> None:
        """Forget a stopped connector's source offsets, so it starts over (snapshots again)."""
        self.request("DELETE", f"/connectors/{name}/offsets")

    def validate(self, connector_class: str, config: dict[str, str]) -> dict[str, list[str]]:
        """Connect's per-key errors for a config (empty when it is valid)."""
        plugin = connector_class.rsplit(".", 1)[-1]
        answer = self.request("PUT", f"/connector-plugins/{plugin}/config/validate",
                              json={"connector.class": connector_class, **config})
        errors: dict[str, list[str]] = {}
        for entry in answer.get("configs", []):
            value = entry.get("value") or {}
            if value.get("errors"):
                errors[value.get("name", "?")] = list(value["errors"])
        return errors
