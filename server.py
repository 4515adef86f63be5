"""The ASGI application: ``create_app(settings)`` wires the routers, the error handler, lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from policies.templates import load_templates
from sandbox import api, keystore, store
from sandbox.api import problems
from sandbox.api.deps import Services
from sandbox.config import Settings
from sandbox.executor import Executor, ExecutorLimits
from sandbox.queries import QueryService
from sandbox.signing import Signer
from sandbox.verification import VerificationService


def create_app(settings: Settings | None = None) -> FastAPI:
    """A Veil app; the executor starts (and self-tests its lockdown) when the app starts."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        templates = load_templates(settings.templates_path)  # a bad file: refuse to start
        keys, zone_secret = keystore.open_keys(settings.keys_path)
        engine = store.connect(settings.state_url)
        executor = Executor(
            ExecutorLimits(
                workers=settings.workers,
                threads=settings.worker_threads,
                memory_limit=settings.worker_memory_limit,
                address_space_bytes=int(settings.worker_address_space_gb * 2**30),
                timeout_s=settings.query_timeout_s,
            ),
            settings.temp_dir,
        )
        executor.start()  # refuses to serve if a worker's lockdown self-test fails
        signer = Signer(keys.current, settings.signing_processes)
        app.state.services = Services(
            settings=settings,
            engine=engine,
            executor=executor,
            queries=QueryService(engine, executor, settings),
            verification=VerificationService(
                engine,
                executor,
                templates,
                keys,
                zone_secret,
                envelope_ms=settings.verification_envelope_ms,
                signer=signer,
            ),
        )
        try:
            yield
        finally:
            signer.close()
            executor.close()
            engine.dispose()

    app = FastAPI(
        title="Veil",
        version="0.1.0",
        summary="Usable but invisible: DP aggregates over public data, never rows.",
        lifespan=lifespan,
    )
    problems.install(app)
    app.include_router(api.router)
    return app
