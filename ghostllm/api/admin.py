"""ghostllm.v1.AdminService: the admin API (/admin/...), over gRPC and, transcoded by
Envoy, REST. Reading needs the admin or viewer role, writing the admin role: the
pipeline's authorize stage decides, by the endpoint each RPC names.

The RPCs live by subject: accounts (users, teams, keys) in admin_accounts.py, the
catalogue (providers, models) in admin_catalogue.py; the audit log is here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ghostllm.accounts.models import ModelRepository
from ghostllm.accounts.repository import AccountRepository
from ghostllm.api import admin_messages as msg
from ghostllm.api.admin_access import admitted
from ghostllm.api.admin_accounts import AccountsAdmin
from ghostllm.api.admin_catalogue import CatalogueAdmin
from ghostllm.api.boundary import unary
from ghostllm.config import Config
from ghostllm.gateway.context import RequestContext
from ghostllm.gateway.pipeline import Pipeline
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.routing.catalogue import Catalogue
from ghostllm.routing.health import ProviderHealth
from ghostllm.v1 import admin_pb2, admin_pb2_grpc


class AdminService(AccountsAdmin, CatalogueAdmin, admin_pb2_grpc.AdminServiceServicer):
    def __init__(
        self,
        pipeline: Pipeline,
        accounts: AccountRepository,
        catalogue: Catalogue,
        health: ProviderHealth,
        config: Config,
        changed: Callable[[str], Awaitable[None]],
    ) -> None:
        self.pipeline = pipeline
        self.accounts = accounts
        self.catalogue = catalogue
        self.health = health
        self.store = accounts.store
        self.config = config
        self.models = ModelRepository(accounts.store)
        self.changed = changed

    @unary
    async def ListAudit(self, request: admin_pb2.ListAuditRequest, rc: RequestContext) -> admin_pb2.ListAuditResponse:
        async with admitted(self.pipeline, rc, Endpoint.ADMIN_READ):
            page = await self.accounts.list_audit(**msg.page_args(request))
            return admin_pb2.ListAuditResponse(
                entries=[msg.audit_entry(e) for e in page.items], pagination=msg.pagination(page)
            )
