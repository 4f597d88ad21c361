"""The operator's probes, served by the process whether it leads or stands by.

- ``/healthz`` (liveness): the leader is healthy unless due work is held up
  (:meth:`Controller.liveness`); a standby is healthy while it keeps reading the Lease.
- ``/readyz`` (readiness): the leader once kopf is running; a standby once it follows the
  Lease. Both count as available, so that a PodDisruptionBudget lets one of two replicas go and
  a rollout completes; who leads is in the body, the ``leader_election_master_status`` metric
  and the Lease's holder.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from aigw_operator.runtime.controller import Controller
from aigw_operator.runtime.leader import LeaderElector


class Health:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.elector: LeaderElector | None = None
        # kopf has started and listed what it watches (this process leads, or needs no Lease).
        self.running = False
        self._runner: web.AppRunner | None = None

    async def start(self, endpoint: str) -> None:
        """Serve at ``endpoint``'s host and port: its path (``/healthz``) and ``/readyz``."""
        url = urlsplit(endpoint)
        app = web.Application()
        app.router.add_get(url.path or "/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, url.hostname or "0.0.0.0", url.port or 8080).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _leading(self) -> bool:
        return self.elector is None or self.elector.leading

    def _following(self) -> bool:
        """A standby that has read the Lease lately (it would notice a leader that is gone)."""
        elector = self.elector
        if elector is None:
            return False
        settings = elector.settings
        return time.monotonic() - elector.contact_at < settings.lease_duration + 2 * settings.retry_period

    async def _healthz(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = {"leading": self._leading()}
        if self.running and self._leading():
            try:
                body["reconcile"] = self.controller.liveness()
            except RuntimeError as exc:
                body["error"] = str(exc)
                return web.json_response(body, status=500)
        elif not self._following() and self.elector is not None:
            body["error"] = "the Lease has not been read lately"
            return web.json_response(body, status=500)
        return web.json_response(body)

    async def _readyz(self, request: web.Request) -> web.Response:
        ready = (self.running and self._leading()) or (not self._leading() and self._following())
        return web.json_response({"leading": self._leading(), "ready": ready}, status=200 if ready else 503)
