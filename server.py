"""The ASGI application: ``create_app(settings)`` wires the routers, the error handler, lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from sqlalchemy import Engine

from policies.templates.loader import load_templates
from sandbox import api, catalog
from sandbox.access.admin import Administration
from sandbox.access.keys import KeyCache
from sandbox.api import docs, idempotency, openapi, problems
from sandbox.api.audit import AuditMiddleware
from sandbox.api.deps import Services
from sandbox.api.guard import Guard, GuardMiddleware
from sandbox.api.metrics import MetricsMiddleware
from sandbox.api.responses.queries import ANSWER_JSON
from sandbox.audit import log as audit
from sandbox.audit.checkpoint import Checkpointer, run_checkpoints
from sandbox.config import Settings
from sandbox.engine.executor import Executor
from sandbox.engine.limits import ExecutorLimits
from sandbox.errors import AuditChainBroken, NotFound
from sandbox.keys.live import LiveKeys
from sandbox.ledger.service import Ledger
from sandbox.metrics.collectors import Sources
from sandbox.metrics.instruments import Metrics
from sandbox.metrics.listener import listen
from sandbox.onboarding.services import Onboarding
from sandbox.queries import QueryService
from sandbox.store import db
from sandbox.vault.decrypted import Vault
from sandbox.vault.text import SealedText, seal_plain_rows
from sandbox.verification.consents import ConsentService
from sandbox.verification.facts import FactsIndex
from sandbox.verification.issued import ReceiptService
from sandbox.verification.published import TemplateCatalog
from sandbox.verification.quota import QuotaService
from sandbox.verification.service import VerificationService
from sandbox.verification.signer import Signer


def _current(engine: Engine, dataset: str) -> catalog.DatasetVersion | None:
    try:
        return catalog.current(engine, dataset)
    except NotFound:
        return None


async def _last_checkpoint(checkpointer: Checkpointer) -> None:
    """The shutdown checkpoint; a failure is logged (a broken chain by the writer itself)."""
    try:
        await asyncio.to_thread(checkpointer.write, force=True)
    except AuditChainBroken:
        pass
    except Exception as exc:
        logging.getLogger("veil.audit").error(
            "audit checkpoint at shutdown failed: %s", type(exc).__name__
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    """A Veil app; the executor starts (and self-tests its lockdown) when the app starts."""
    settings = settings or Settings()
    metrics = Metrics()  # per app: counted by its middleware, read by /metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        listener = None  # first: a metrics port that cannot be taken refuses to start at once
        if settings.metrics_port is not None:
            listener = listen(metrics, settings.metrics_host, settings.metrics_port)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        templates = load_templates(settings.templates_path)  # a bad file: refuse to start
        # Key files open to group or others, or a malformed VEIL_MASTER_KEY: refuse to start.
        # The rings follow the key directory: rotation by the CLI needs no restart.
        live_keys = LiveKeys(
            settings.keys_path, master_key=settings.master_key, hmac_key=settings.audit_hmac_key
        )
        keys, zone_secret, master_keys = live_keys.receipt, live_keys.zone_secret, live_keys.master
        engine = db.connect(settings.state_url)
        # The audit log: entries in the same transactions as the changes they record.
        audit_log = audit.AuditLog(engine, live_keys.audit)
        audit_log.prepare()
        seal_plain_rows(SealedText(audit_log))  # texts stored before they were sealed (0010)
        checkpointer = Checkpointer(
            engine,
            live_keys.audit_signing,
            settings.audit_checkpoint_s,
            hmac=live_keys.audit.hmac,  # a ring that reads the directory again for a new key id
            witness=settings.audit_witness,
        )
        try:  # checks the log before it signs: a broken chain refuses to start (fail closed)
            await asyncio.to_thread(checkpointer.write)
        except BaseException:
            engine.dispose()
            raise
        checkpoints = asyncio.create_task(run_checkpoints(checkpointer))
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
        # Stored workspaces are sealed; each current version is decrypted once into RAM.
        vault = Vault(master_keys, settings.runtime_dir)
        vault.warm_in_background(lambda: catalog.list_current(engine))
        signer = Signer(keys.ring().current, settings.signing_processes)
        facts = FactsIndex(executor, vault, settings.verification_index_max_subjects)
        facts.warm(templates.latest.values(), lambda dataset: _current(engine, dataset))
        ledger = Ledger(engine, audit_log)
        app.state.services = Services(
            settings=settings,
            engine=engine,
            audit=audit_log,
            admin=Administration(engine, audit_log, ledger),
            ledger=ledger,
            executor=executor,
            vault=vault,
            queries=QueryService(engine, executor, settings, ledger, audit_log, ANSWER_JSON, vault),
            verification=VerificationService(
                engine,
                audit_log,
                executor,
                templates,
                keys,
                zone_secret,
                envelope_ms=settings.verification_envelope_ms,
                signer=signer,
                vault=vault,
                facts=facts,
            ),
            consents=ConsentService(engine, audit_log, templates, zone_secret),
            receipts=ReceiptService(engine, audit_log, keys, zone_secret),
            templates=TemplateCatalog(templates),
            verification_quotas=QuotaService(engine, audit_log, templates),
            facts=facts,
            key_cache=KeyCache(engine, settings.auth_cache_s),
            onboarding=Onboarding.build(
                engine,
                audit_log,
                settings.workspace_dir,
                quota_bytes=settings.load_quota_bytes,
                zone_secret=zone_secret,
                master_keys=master_keys,
                upload_max_bytes=settings.upload_max_bytes,
                upload_expiry=timedelta(seconds=settings.upload_expiry_s),
                signing=keys,
            ),
            checkpointer=checkpointer,
            metrics=metrics,
        )
        metrics.live.sources = Sources(engine, executor, facts)
        try:
            yield
        finally:
            if listener is not None:
                listener.close()
            metrics.live.sources = None
            checkpoints.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checkpoints
            signer.close()
            facts.close()  # before the executor: a build in progress uses it
            executor.close()
            vault.close()  # after the workers: removes every decrypted copy
            await _last_checkpoint(checkpointer)  # a clean shutdown signs the last entries
            engine.dispose()

    app = FastAPI(
        title="Veil",
        version="0.1.0",
        summary="Usable but invisible: DP aggregates over public data, never rows.",
        lifespan=lifespan,
        docs_url=None,  # sandbox/api/docs.py serves the docs pages, with their assets
        redoc_url=None,
    )
    problems.install(app)
    idempotency.install(app)  # innermost middleware: settles Idempotency-Key claims
    app.add_middleware(GuardMiddleware, guard=Guard(settings))  # rate and body limits
    app.add_middleware(AuditMiddleware)  # refusals by the guard are recorded too
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: whole latency, every code
    for router in api.routers:
        app.include_router(router)
    openapi.install(app)  # problem responses declared on every operation
    docs.install(app)  # /docs and /redoc, their assets served here (no CDN)
    return app
