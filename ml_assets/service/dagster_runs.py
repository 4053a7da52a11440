"""Training runs through the Dagster webserver's GraphQL API, launched at most once per
idempotency key."""

from __future__ import annotations

import hashlib
import json
import threading
import weakref
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from ml_assets import names
from ml_assets.tenants import Tenant

PARTITION_TAG = "dagster/partition"
IDEMPOTENCY_TAG = "ml_assets/idempotency_key"
REQUEST_TAG = "ml_assets/request_sha256"
API_KEY_TAG = "ml_assets/api_key"

# The public client covers launch, status and terminate; reading one run's tags and config
# and finding runs by tag need these two queries, sent through the client's own transport.
_RUN_FIELDS = "runId status jobName creationTime startTime endTime runConfig tags { key value }"
RUN_QUERY = f"""query ServiceRun($runId: ID!) {{
  runOrError(runId: $runId) {{
    __typename
    ... on Run {{ {_RUN_FIELDS} }}
    ... on Error {{ message }}
  }}
}}"""
RUNS_BY_TAG_QUERY = f"""query ServiceRunsByTag($filter: RunsFilter!) {{
  runsOrError(filter: $filter, limit: 10) {{
    __typename
    ... on Runs {{ results {{ {_RUN_FIELDS} }} }}
    ... on Error {{ message }}
  }}
}}"""


class DagsterUnavailable(RuntimeError):
    """The webserver did not answer, or answered with an error that is not the caller's."""


class IdempotencyConflict(ValueError):
    """The idempotency key was used before with a different request body."""


@dataclass(frozen=True)
class Run:
    run_id: str
    status: str
    job: str
    tags: dict[str, str]
    run_config: dict[str, Any]
    created: float
    started: float | None
    ended: float | None

    @property
    def tenant(self) -> str | None:
        return self.tags.get(PARTITION_TAG)

    @classmethod
    def from_graphql(cls, node: dict[str, Any]) -> Run:
        return cls(run_id=node["runId"], status=node["status"], job=node["jobName"],
                   tags={tag["key"]: tag["value"] for tag in node["tags"]},
                   run_config=node["runConfig"] or {}, created=node["creationTime"],
                   started=node["startTime"], ended=node["endTime"])


@dataclass(frozen=True)
class Launch:
    run: Run
    created: bool  # False: an earlier request with the same idempotency key launched it


def _sha256(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


class DagsterRuns:
    """The training job of tenant partitions, as runs on one Dagster webserver."""

    def __init__(self, url: str, timeout_s: int = 30) -> None:
        parts = urlsplit(url)
        if not parts.hostname:
            raise ValueError(f"Dagster webserver URL {url!r} has no host")
        self.url = url.rstrip("/")
        self.client = DagsterGraphQLClient(
            parts.hostname, port_number=parts.port, use_https=parts.scheme == "https",
            path_prefix=parts.path.rstrip("/"), timeout=timeout_s)
        self._locks: weakref.WeakValueDictionary[str, threading.Lock] = (
            weakref.WeakValueDictionary())
        self._locks_guard = threading.Lock()

    def run_url(self, run_id: str) -> str:
        return f"{self.url}/runs/{run_id}"

    def _query(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.client._execute(query, variables)
        except DagsterGraphQLClientError as exc:
            raise DagsterUnavailable(f"Dagster webserver at {self.url}: {exc}") from exc

    def run(self, run_id: str) -> Run | None:
        answer = self._query(RUN_QUERY, {"runId": run_id})["runOrError"]
        if answer["__typename"] == "RunNotFoundError":
            return None
        if answer["__typename"] != "Run":
            raise DagsterUnavailable(f"{answer['__typename']}: {answer.get('message')}")
        return Run.from_graphql(answer)

    def runs_tagged(self, key: str, value: str) -> list[Run]:
        answer = self._query(RUNS_BY_TAG_QUERY,
                             {"filter": {"tags": [{"key": key, "value": value}]}})["runsOrError"]
        if answer["__typename"] != "Runs":
            raise DagsterUnavailable(f"{answer['__typename']}: {answer.get('message')}")
        return [Run.from_graphql(node) for node in answer["results"]]

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = threading.Lock()
            return lock

    def launch_training(self, tenant: Tenant, trained_model_config: dict[str, Any],
                        api_key_id: str, idempotency_key: str | None) -> Launch:
        """Launch the training job for the tenant's partition with the given `trained_model`
        config. With an idempotency key, a repeat of the same request returns the first run;
        the key is scoped to the API key, and reusing it for another body is refused."""
        step = names.op_name(tenant.use_case, names.TRAINED_MODEL)
        job = names.model_job(tenant.use_case)
        run_config = {"ops": {step: {"config": trained_model_config}}}
        request_sha = _sha256(tenant.key, json.dumps(run_config, sort_keys=True))
        tags = {PARTITION_TAG: tenant.key, API_KEY_TAG: api_key_id, REQUEST_TAG: request_sha}
        if idempotency_key is None:
            return Launch(self._submit(job, run_config, tags), created=True)
        scoped = _sha256(api_key_id, tenant.key, idempotency_key)
        # The tag lookup spans restarts and other replicas' past launches; the lock closes the
        # window between lookup and launch for concurrent retries reaching this process.
        with self._lock(scoped):
            earlier = self.runs_tagged(IDEMPOTENCY_TAG, scoped)
            if earlier:
                first = min(earlier, key=lambda run: run.created)
                if first.tags.get(REQUEST_TAG) != request_sha:
                    raise IdempotencyConflict(
                        "Idempotency-Key was already used with a different request body "
                        f"(run {first.run_id}); use a new key for a new experiment")
                return Launch(first, created=False)
            return Launch(self._submit(job, run_config, {**tags, IDEMPOTENCY_TAG: scoped}),
                          created=True)

    def _submit(self, job: str, run_config: dict[str, Any], tags: dict[str, str]) -> Run:
        try:
            run_id = self.client.submit_job_execution(job, run_config=run_config, tags=tags)
        except DagsterGraphQLClientError as exc:
            raise DagsterUnavailable(f"launching {job} failed: {exc}") from exc
        run = self.run(run_id)
        if run is None:
            raise DagsterUnavailable(f"Dagster launched run {run_id} but does not find it")
        return run

    def terminate(self, run_id: str) -> None:
        self.client.terminate_run(run_id)

    def ready(self) -> None:
        """Raises DagsterUnavailable unless the webserver answers GraphQL."""
        self._query("query ServiceReady { version }", {})
