"""Calls to a tenant's live endpoint: the smoke test of `deployed_endpoint`, the CLI's curl."""

import json
import urllib.error
import urllib.request


def post_json(url: str, body: dict, token: str | None = None,
              timeout: float = 30) -> tuple[int, dict, dict]:
    """(status, headers, json body) of a POST with the API key `token`; HTTP errors are
    returned, not raised."""
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, dict(exc.headers), json.loads(raw)
        except json.JSONDecodeError:  # e.g. the Serve proxy's plain-text 404
            return exc.code, dict(exc.headers), {"error": raw.decode(errors="replace")}


def input_example(model_uri: str) -> list[dict]:
    """The rows the model was logged with, as JSON records: the smoke test's requests."""
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    local = download_artifacts(model_uri)
    example = Model.load(local).load_input_example(local)
    return json.loads(example.to_json(orient="records"))
