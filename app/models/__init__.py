"""One file per table, re-exported so Alembic sees the whole metadata."""

from app.models.activity import Activity
from app.models.api_key import ApiKey, Role
from app.models.archive_job import ArchiveJob, ArchiveJobStatus
from app.models.audit import AuditEntry
from app.models.completion import CompletionProfile, CompletionSample
from app.models.delivery import Delivery, DeliveryAttempt, DeliveryStatus
from app.models.event import Event
from app.models.inbound_callback import InboundCallback
from app.models.provider_state import ProviderHealth, ProviderState
from app.models.task import TERMINAL_STATUSES, Task, TaskStatus, TaskView
from app.models.task_poll import POLL_LOG_SIZE, TaskPollLog
from app.models.tenant_secret import TenantSecret
from app.models.webhook_endpoint import WebhookEndpoint

__all__ = [
    "POLL_LOG_SIZE",
    "TERMINAL_STATUSES",
    "Activity",
    "ApiKey",
    "ArchiveJob",
    "ArchiveJobStatus",
    "AuditEntry",
    "CompletionProfile",
    "CompletionSample",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryStatus",
    "Event",
    "InboundCallback",
    "ProviderHealth",
    "ProviderState",
    "Role",
    "Task",
    "TaskPollLog",
    "TaskStatus",
    "TaskView",
    "TenantSecret",
    "WebhookEndpoint",
]
