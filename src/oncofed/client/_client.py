"""A small synchronous client for researchers and operators (notebooks, scripts, the CLI)."""

from __future__ import annotations

import os
import ssl
import string
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from pydantic import ValidationError

from oncofed.wire.access import NewToken, PrincipalPublic, TokenCreated, TokenPublic
from oncofed.wire.analysis import SPECS, AnalysisSpec
from oncofed.wire.messages import (
    API_PREFIX,
    JobCreated,
    JobPublic,
    SiteCreated,
    SitePublic,
    error_detail,
)
from oncofed.wire.profile import DataProfile
from oncofed.wire.projects import NewProject, ProjectPublic
from oncofed.wire.spec import JobSpec

URL_ENV, TOKEN_ENV, CA_ENV = "ONCOFED_URL", "ONCOFED_TOKEN", "ONCOFED_CA"
T = TypeVar("T")


class ClientError(Exception):
    """A request the orchestrator refused, or a spec that does not validate."""


def _field_path(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """An error's path without the job kind pydantic puts first (``train.model.type``)."""
    return loc[1:] if loc and loc[0] in _KINDS else loc


_KINDS = ("train", "analysis")
JOB_ID_LENGTH = 32
"""A job id's hex digits; a shorter one is the start of one (``Client.resolve_job``)."""
HEX_DIGITS = frozenset(string.hexdigits.lower())
MAX_CANDIDATES = 5
"""The jobs an ambiguous id prefix names at most."""


def load_spec(source: Path | str | dict[str, Any]) -> JobSpec | AnalysisSpec:
    """A training job or an analysis from a YAML file or a dict; errors name the file and the
    field."""
    return _load(source, SPECS.validate_python, "job spec")


def _load(source: Path | str | dict[str, Any], validate: Callable[[Any], T], what: str) -> T:
    """A message from a YAML file or a dict; errors name the file and each field."""
    where = str(source) if isinstance(source, Path | str) else what
    try:
        data = (
            yaml.safe_load(Path(source).read_text()) if isinstance(source, Path | str) else source
        )
    except (OSError, yaml.YAMLError) as exc:
        raise ClientError(f"{where}: cannot be read: {exc}") from exc
    try:
        return validate(data)
    except ValidationError as exc:
        raise ClientError(f"{where}: invalid {what}: {problems(exc)}") from exc


def problems(exc: ValidationError) -> str:
    """Each of a validation's errors as ``field.path: message``, on one line."""
    return "; ".join(
        f"{'.'.join(str(p) for p in _field_path(err['loc'])) or '(top level)'}: {err['msg']}"
        for err in exc.errors()
    )


def _verify(ca: Path | str | None) -> ssl.SSLContext | bool:
    """Trust the consortium CA in the file ``ca`` alone (never the system's store), or the
    system's store when none is given."""
    if not ca:
        return True
    try:
        return ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise ClientError(f"cannot use the CA file {ca}: {exc}") from exc


class Client:
    """``Client(url, token, ca=...)``; they default to ``ONCOFED_URL``, ``ONCOFED_TOKEN`` and
    ``ONCOFED_CA`` (the consortium CA's certificate, which the orchestrator's must chain to)."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        ca: Path | str | None = None,
    ) -> None:
        url = url or os.environ.get(URL_ENV)
        token = token or os.environ.get(TOKEN_ENV)
        if not url or not token:
            raise ClientError(f"give the orchestrator URL and token, or set {URL_ENV}/{TOKEN_ENV}")
        self._http = httpx.Client(
            base_url=url.rstrip("/") + API_PREFIX,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            verify=_verify(ca or os.environ.get(CA_ENV)),
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ClientError(
                f"cannot reach the orchestrator at {self._http.base_url}: {exc}"
            ) from exc
        if response.status_code >= 400:
            detail = error_detail(response.content)
            raise ClientError(f"{method} {path}: HTTP {response.status_code}: {detail}")
        return response

    def health(self) -> dict[str, str]:
        return dict(self._request("GET", "/health").json())

    def sites(self) -> list[SitePublic]:
        return [SitePublic.model_validate(s) for s in self._request("GET", "/sites").json()]

    def add_site(self, name: str) -> SiteCreated:
        return SiteCreated.model_validate(
            self._request("POST", "/sites", json={"name": name}).json()
        )

    def revoke_site(self, name: str) -> SitePublic:
        """Revoke a site (operator): its credential fails from its next request on."""
        return SitePublic.model_validate(self._request("POST", f"/sites/{name}/revoke").json())

    def disable_site(self, name: str) -> SitePublic:
        """Disable a site (operator): it gets no task and its edge is refused until enabled."""
        return SitePublic.model_validate(self._request("POST", f"/sites/{name}/disable").json())

    def enable_site(self, name: str) -> SitePublic:
        """Enable a disabled site (operator): its edge is served again."""
        return SitePublic.model_validate(self._request("POST", f"/sites/{name}/enable").json())

    def remove_site(self, name: str) -> None:
        """Remove a site with no running task (operator): it leaves the listings for good."""
        self._request("DELETE", f"/sites/{name}")

    def profiles(self, site: str) -> list[DataProfile]:
        """The data quality report ``site`` sent on each of its datasets (suppressed counts)."""
        response = self._request("GET", f"/sites/{site}/profiles")
        return [DataProfile.model_validate(p) for p in response.json()]

    def submit(self, spec: JobSpec | AnalysisSpec | Path | str | dict[str, Any]) -> JobCreated:
        spec = spec if isinstance(spec, JobSpec | AnalysisSpec) else load_spec(spec)
        body = spec.model_dump(mode="json")
        return JobCreated.model_validate(self._request("POST", "/jobs", json=body).json())

    def job(self, job_id: str) -> JobPublic:
        return JobPublic.model_validate_json(self._request("GET", f"/jobs/{job_id}").content)

    def jobs(self, page: int = 100) -> list[JobPublic]:
        """Every job, in the order submitted, fetched ``page`` at a time."""
        found: list[JobPublic] = []
        while True:
            params = {"limit": page, "offset": len(found)}
            batch = self._request("GET", "/jobs", params=params).json()
            found += [JobPublic.model_validate(j) for j in batch]
            if len(batch) < page:
                return found

    def resolve_job(self, prefix: str) -> str:
        """The id of the one job visible to the caller whose id starts with ``prefix`` (as
        git takes a commit's), ``prefix`` itself when it is a whole id (32 hex digits: nothing
        else reaches a URL path). ClientError when no job or more than one matches."""
        wanted = prefix.strip().lower()
        if len(wanted) == JOB_ID_LENGTH and set(wanted) <= HEX_DIGITS:
            return wanted
        if not wanted:
            raise ClientError("give a job id (or the start of one)")
        found = [job for job in self.jobs() if job.id.startswith(wanted)]
        if not found:
            raise ClientError(f"no job id starts with {prefix!r} (see 'oncofed job list')")
        if len(found) > 1:
            named = ", ".join(f"{job.id} ({job.name})" for job in found[:MAX_CANDIDATES])
            more = f" and {len(found) - MAX_CANDIDATES} more" if len(found) > MAX_CANDIDATES else ""
            raise ClientError(f"job id {prefix!r} is ambiguous: {named}{more}")
        return found[0].id

    def wait(
        self,
        job_id: str,
        *,
        poll: float = 0.5,
        timeout: float | None = None,
        on_update: Callable[[JobPublic], None] | None = None,
    ) -> JobPublic:
        """Poll until the job has ended (completed, failed or cancelled); ``on_update`` sees
        every state."""
        give_up = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if job.status != "running":
                return job
            if give_up is not None and time.monotonic() > give_up:
                raise ClientError(f"job {job_id} still running after {timeout}s")
            time.sleep(poll)

    def cancel_job(self, job_id: str) -> JobPublic:
        """Cancel a running job: its open tasks are withdrawn and it ends ``cancelled``."""
        response = self._request("POST", f"/jobs/{job_id}/cancel")
        return JobPublic.model_validate_json(response.content)

    def model_bytes(self, job_id: str) -> bytes:
        """The latest global model as safetensors bytes."""
        return self._request("GET", f"/jobs/{job_id}/model").content

    def download_result(self, job_id: str, out: Path | str) -> list[Path]:
        """Write any ended job's whole result in the folder ``out``, the paths written: a
        training job's self-describing ``model.safetensors`` (read it with
        :func:`~oncofed.client.load_model`), ``report.json`` and ``metrics.png``; an
        analysis's ``report.json``, tidy CSV tables and plots. Both reports carry their
        provenance. ClientError when the job has no result to write."""
        from oncofed.client.plots import write_job  # matplotlib, on first use

        job = self.job(job_id)
        model = self.model_bytes(job_id) if job.spec.kind == "train" else None
        return write_job(job, Path(out), model)

    def people(self) -> list[PrincipalPublic]:
        """Everyone who may call the API (the operator's view)."""
        return [PrincipalPublic.model_validate(p) for p in self._request("GET", "/people").json()]

    def add_person(
        self, name: str, role: str, site: str | None = None, days: float | None = None
    ) -> TokenCreated:
        """Add a researcher, site admin or operator; the answer holds their first token (the
        orchestrator validates the fields)."""
        body = {"name": name, "role": role, "site": site, "days": days}
        response = self._request("POST", "/people", json=body)
        return TokenCreated.model_validate(response.json())

    def tokens(self) -> list[TokenPublic]:
        """The caller's tokens (the operator's: everyone's)."""
        return [TokenPublic.model_validate(t) for t in self._request("GET", "/tokens").json()]

    def new_token(self, label: str = "", days: float | None = None) -> TokenCreated:
        """Another token for the caller, e.g. to rotate the one in use."""
        body = NewToken(label=label, days=days).model_dump(mode="json")
        return TokenCreated.model_validate(self._request("POST", "/tokens", json=body).json())

    def revoke_token(self, token_id: int) -> TokenPublic:
        """Revoke a token; it fails from its next request on."""
        return TokenPublic.model_validate(self._request("DELETE", f"/tokens/{token_id}").json())

    def create_project(self, project: NewProject | Path | str | dict[str, Any]) -> ProjectPublic:
        """Declare a project (from a YAML file, a dict or a ``NewProject``)."""
        if not isinstance(project, NewProject):
            project = _load(project, NewProject.model_validate, "project")
        body = project.model_dump(mode="json")
        return ProjectPublic.model_validate(self._request("POST", "/projects", json=body).json())

    def projects(self) -> list[ProjectPublic]:
        """The projects the caller may read, with each site's decision."""
        return [ProjectPublic.model_validate(p) for p in self._request("GET", "/projects").json()]

    def project(self, name: str) -> ProjectPublic:
        return ProjectPublic.model_validate(self._request("GET", f"/projects/{name}").json())

    def add_member(self, project: str, researcher: str) -> None:
        """Add a researcher to a project (its owner or the operator may)."""
        self._request("POST", f"/projects/{project}/members", json={"name": researcher})
