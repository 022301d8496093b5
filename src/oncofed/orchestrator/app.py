"""The orchestrator's FastAPI application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from importlib import import_module

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from oncofed import __version__
from oncofed.audit import AuditError
from oncofed.learning.plugins import PluginError
from oncofed.orchestrator import bodies, openapi, throttle
from oncofed.orchestrator.authlog import AuthLog
from oncofed.orchestrator.blobs import BlobStore
from oncofed.orchestrator.db import AUDIT, make_engine, session_factory
from oncofed.orchestrator.errors import OrchestratorError
from oncofed.orchestrator.identity import Credentials, Sightings
from oncofed.orchestrator.lease import Lease
from oncofed.orchestrator.notifier import Notifier
from oncofed.orchestrator.quotas import Quotas
from oncofed.orchestrator.rounds import Coordinator
from oncofed.orchestrator.routes import access, edge, invalid_request, jobs, projects, sites
from oncofed.orchestrator.routes.hot import HotRoutes
from oncofed.orchestrator.settings import Settings
from oncofed.orchestrator.setup import identity_key
from oncofed.wire.messages import API_PREFIX

log = logging.getLogger("oncofed.orchestrator")
ANALYSIS = "oncofed.orchestrator.analysis"


async def _tick(app: FastAPI, period: float) -> None:
    """Close rounds whose deadline passed, whatever the edges are doing; write when the sites
    were last seen; verify the remembered site credentials again; chain the audit log.

    Its threads are the loop's default executor, not the requests' pool: requests waiting for
    a batch to be recorded can fill that, and the tick must not queue behind them."""
    while True:
        await asyncio.sleep(period)
        try:
            await asyncio.to_thread(app.state.coordinator.expire)
        except Exception:  # keep ticking; the next tick retries
            log.exception("deadline check failed")
        try:
            await asyncio.to_thread(app.state.sightings.flush, app.state.sessions)
        except SQLAlchemyError as exc:  # kept for the next tick
            log.warning("when sites were last seen is not written yet: %s", exc)
        try:
            await asyncio.to_thread(app.state.credentials.recheck, app.state.sessions)
        except SQLAlchemyError as exc:  # requests verify stale ones themselves meanwhile
            log.warning("site credentials not verified again yet: %s", exc)
        try:
            await asyncio.to_thread(_audit, app, False)
        except (SQLAlchemyError, AuditError) as exc:  # pending, or in memory, until the next
            log.warning("the audit log is not chained up to now yet: %s", exc)


def _audit(app: FastAPI, final: bool) -> None:
    """Write the authentications gathered, then chain every entry written since the last
    time (and sign a checkpoint when one is due, or ``final``); one chainer at a time (the
    tick's thread may still run when the app stops)."""
    with app.state.chaining:
        app.state.auth_log.flush(app.state.sessions)
        AUDIT.chain_pending(app.state.sessions, app.state.identity, final=final)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.notifier.bind(asyncio.get_running_loop())
    if removed := app.state.coordinator.blobs.clear_spool():
        log.info("removed %d upload(s) left unfinished by an earlier run", removed)
    app.state.lease.start()
    # The analytics (scipy) load in the background: the first analysis does not wait for
    # them, and a start is not slowed by them.
    warm = asyncio.get_running_loop().run_in_executor(None, import_module, ANALYSIS)
    ticker = asyncio.create_task(_tick(app, app.state.settings.tick_seconds))
    try:
        yield
    finally:
        ticker.cancel()
        await warm
        app.state.sightings.flush(app.state.sessions)
        app.state.coordinator.close()
        _audit(app, final=True)
        app.state.lease.release()
        app.state.engine.dispose()


async def _orchestrator_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OrchestratorError)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


async def _plugin_error(_: Request, exc: Exception) -> JSONResponse:
    """A job naming a plugin's model type whose installed files here are broken or changed."""
    return JSONResponse({"detail": f"the model type cannot be used: {exc}"}, status_code=400)


def create_app(settings: Settings) -> FastAPI:
    """An app on the schema at ``settings.url`` (migrated beforehand by ``migrate``).

    It takes the database for its process (``ServiceRunning`` when another serves it) and
    gives open rounds back the time the orchestrator was down, so it is created once per
    process; its lifespan's end lets the database go.
    """
    app = FastAPI(
        title="oncofed orchestrator",
        version=__version__,
        lifespan=_lifespan,
        responses={**bodies.RESPONSES, **throttle.RESPONSES},
    )
    engine = make_engine(settings.url)
    try:
        app.state.lease = Lease.acquire(engine, settings.beat_seconds)
    except BaseException:
        engine.dispose()
        raise
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = session_factory(engine)
    app.state.notifier = Notifier()
    app.state.credentials = Credentials()
    app.state.sightings = Sightings()
    app.state.identity = identity_key(settings)
    app.state.coordinator = Coordinator(
        app.state.sessions,
        BlobStore(settings.blob_dir),
        app.state.notifier,
        app.state.identity,
        settings.answer_hold_seconds,
    )
    app.state.auth_log = AuthLog()
    app.state.chaining = threading.Lock()
    app.state.quotas = Quotas(app.state.sessions, settings)
    app.state.auth_failures = throttle.AuthFailures(settings, app.state.credentials.get)
    app.state.auth_failures.on_failure = app.state.auth_log.failure
    app.add_middleware(HotRoutes)  # inside the body limits and the throttle
    app.add_middleware(bodies.BodyLimits, settings=settings)
    app.add_middleware(throttle.Throttle, failures=app.state.auth_failures)  # outermost
    app.add_exception_handler(OrchestratorError, _orchestrator_error)
    app.add_exception_handler(PluginError, _plugin_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    openapi.install(app)  # every status of every route, in /openapi.json
    for module in (access, edge, jobs, projects, sites):
        app.include_router(module.router, prefix=API_PREFIX)

    @app.get(f"{API_PREFIX}/health", tags=["health"])
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    return app
