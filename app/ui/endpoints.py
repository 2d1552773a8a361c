"""The dashboard's routes under /ui: sign-in, sign-out and the pages.

A page takes `UserDep` (the signed-in caller, or a redirect to the sign-in form) and reads
through the same services as the API. A POST also takes `CsrfDep`. A new page is a route
here, a template, and one line in NAV.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader
from pydantic import ValidationError

from app.audit.service import AuditLog, Change, permit
from app.auth.service import Caller
from app.core.errors import NotFound, ServiceError, ValidationFailed
from app.core.times import as_utc
from app.deps import SessionDep, StateDep, charge
from app.models import TaskStatus
from app.overview.schemas import Distribution, Overview
from app.overview.service import OverviewService
from app.providers.schemas import PauseRequest
from app.providers.service import ProviderService
from app.state import AppState
from app.tasks.service import TaskService
from app.ui import timeline
from app.ui.service import caller_for_hash, key_hash_of, session_secret
from app.ui.session import (
    COOKIE_NAME,
    COOKIE_PATH,
    CSRF_FIELD,
    CSRF_HEADER,
    HOME,
    SESSION_TTL_S,
    UiSession,
    csrf_matches,
    new_session,
    safe_next,
    seal,
    unseal,
)
from app.webhooks.schemas import (
    BULK_RETRY_LIMIT,
    BulkRetry,
    DeliveryFilter,
    DeliveryState,
    WebhookUpdate,
)
from app.webhooks.service import WebhookService

STATIC_PATH = "/ui/static"
TASKS_PER_PAGE = 50
# Scripts and styles from pollhook only; htmx adds one inline <style> (its indicators).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# The most bytes of a sign-in or action form read.
MAX_FORM_BYTES = 4096


@dataclass(frozen=True)
class NavItem:
    path: str
    label: str
    operators_only: bool = False

    def is_current(self, path: str) -> bool:
        """Whether the page at `path` is this item's: its own, or one below it (a task's page
        is under Tasks). Every page is below the overview's `/ui`, so that one is exact."""
        return path == self.path or (self.path != HOME and path.startswith(self.path + "/"))


# The pages in the navigation, in order: adding a page is one line here.
NAV = [
    NavItem("/ui", "Overview"),
    NavItem("/ui/tasks", "Tasks"),
    NavItem("/ui/deliveries", "Deliveries"),
    NavItem("/ui/endpoints", "Endpoints"),
    NavItem("/ui/providers", "Providers"),
    NavItem("/ui/audit", "Audit log", operators_only=True),
]


@dataclass(frozen=True)
class User:
    """The signed-in caller of a dashboard request and its session (for its CSRF token)."""

    caller: Caller
    session: UiSession


class SignInRequired(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


class CsrfRefused(Exception):
    pass


templates = Jinja2Templates(
    env=Environment(loader=PackageLoader("app.ui", "templates"), autoescape=True)
)


def _seconds(value: float | None) -> str:
    """A duration for the eye: 'n/a' when there is none (no observation yet)."""
    if value is None:
        return "n/a"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


templates.env.filters["seconds"] = _seconds


def _secret(request: Request) -> bytes:
    """The session key, loaded on the first request that needs it (a process that never
    serves the dashboard creates no key file)."""
    secret: bytes | None = getattr(request.app.state, "ui_session_secret", None)
    if secret is None:
        state: AppState = request.app.state.pollhook
        secret = request.app.state.ui_session_secret = session_secret(state.settings)
    return secret


async def get_user(request: Request, state: StateDep, session: SessionDep) -> User:
    """The caller of a signed, unexpired session whose key is still good; otherwise
    SignInRequired (a GET page redirects to the sign-in form and comes back)."""
    ui_session = unseal(request.cookies.get(COOKIE_NAME), _secret(request), time.time())
    caller = None
    if ui_session is not None:
        caller = await caller_for_hash(session, state.static_keys, ui_session.key_hash)
    if ui_session is None or caller is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(safe_next(target))
    # The request log's name for the caller, and its rate limit, as the API's (app.deps): a
    # page costs the server what a request does.
    request.state.tenant = caller.tenant or caller.actor
    charge(state, caller.actor, 1)
    return User(caller, ui_session)


UserDep = Annotated[User, Depends(get_user)]


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the first value of each): the dashboard's forms are
    small and flat, so the standard library parses them."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    fields = parse_qs(body.decode(errors="replace"), max_num_fields=20)
    return {name: values[0] for name, values in fields.items()}


async def check_csrf(request: Request, user: UserDep) -> dict[str, str]:
    """The form of a POST whose CSRF token (form field, or header from htmx) matches the
    session's; otherwise 403."""
    form = await read_form(request)
    presented = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
    if not csrf_matches(user.session, presented):
        raise CsrfRefused
    return form


CsrfFormDep = Annotated[dict[str, str], Depends(check_csrf)]


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    user: User | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    nav = []
    if user is not None:
        nav = [item for item in NAV if user.caller.is_operator or not item.operators_only]
    response = templates.TemplateResponse(
        request,
        template,
        {"user": user, "nav": nav, "csrf_field": CSRF_FIELD, "static": STATIC_PATH, **context},
        status_code=status_code,
    )
    # Pages show a tenant's data: neither cached nor framed by another site, and running
    # only pollhook's own scripts (a value that slipped past the escaping runs nothing).
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _task_service(state: AppState, session: SessionDep) -> TaskService:
    return TaskService(session, state.settings, state.guard, state.forecasts, state.archive_links)


router = APIRouter(prefix="/ui", include_in_schema=False)


@router.get("/signin")
async def signin_form(request: Request, next: str | None = None) -> HTMLResponse:
    return render(request, "signin.html", {"next": safe_next(next), "error": None})


@router.post("/signin")
async def signin(request: Request, state: StateDep, session: SessionDep) -> Response:
    if not _same_site(request):
        # Another site's form would sign the browser in with a key of its choosing, whose
        # pages the user might then trust (login CSRF): the session cookie's SameSite does
        # not stop a cookie being set by a cross-site post.
        return render(
            request,
            "signin.html",
            {"next": HOME, "error": "Sign in from this site's own form."},
            status_code=403,
        )
    form = await read_form(request)
    target = safe_next(form.get("next"))
    key_hash = key_hash_of(form.get("key", ""))
    caller = None
    if key_hash is not None:
        caller = await caller_for_hash(session, state.static_keys, key_hash)
    if key_hash is None or caller is None:
        return render(
            request,
            "signin.html",
            {"next": target, "error": "That key is not a valid API key."},
            status_code=401,
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        seal(new_session(key_hash, time.time()), _secret(request)),
        max_age=SESSION_TTL_S,
        path=COOKIE_PATH,
        # Behind a proxy that ends TLS, the request is http: the public URL says https.
        secure=request.url.scheme == "https"
        or state.settings.resolved_public_url.startswith("https://"),
        httponly=True,
        samesite="strict",
    )
    return response


def _same_site(request: Request) -> bool:
    """Whether a post comes from this site: browsers say where a request comes from in
    Sec-Fetch-Site, or else in Origin; a client that says neither (not a browser) is let
    through, as the API lets it through with a key."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host")


@router.post("/signout")
async def signout(_: CsrfFormDep) -> Response:
    response = RedirectResponse("/ui/signin", status_code=303)
    response.delete_cookie(COOKIE_NAME, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response


async def _overview_context(user: User, state: AppState, session: SessionDep) -> dict[str, Any]:
    """An operator's overview; for a tenant, which is not shown what is instance-wide, its
    own tracked tasks per instance (as GET /v1/overview and GET /v1/providers decide)."""
    if not user.caller.is_operator:
        providers = await ProviderService(session, state.settings).list(user.caller)
        return {"overview": None, "providers": providers.items}
    shown = await OverviewService(session, state.settings).overview(user.caller)
    return {"overview": shown, "charts": _overview_charts(shown)}


def _overview_charts(shown: Overview) -> str:
    """What the overview's charts draw (app/ui/static/charts.js), as the live fragment's
    data attribute: one request refreshes the figures and the charts alike."""
    return json.dumps(
        {
            "minutes": [int(m.minute.timestamp()) for m in shown.minutes],
            "polls_per_s": [round(m.polls / 60, 3) for m in shown.minutes],
            "deliveries_per_s": [
                round((m.delivered + m.delivery_retries + m.delivery_failures) / 60, 3)
                for m in shown.minutes
            ],
            "delivered_per_s": [round(m.delivered / 60, 3) for m in shown.minutes],
            "detection_gap": _bars(shown.detection_gap),
            "delivery_latency": _bars(shown.delivery_latency),
        },
        separators=(",", ":"),
    )


def _bars(distribution: Distribution) -> dict[str, list[Any]]:
    labels = []
    for bucket in distribution.buckets:
        labels.append(f"≤{bucket.le_s:g}s" if bucket.le_s is not None else "more")
    return {"labels": labels, "counts": [b.count for b in distribution.buckets]}


@router.get("")
async def overview(
    request: Request, user: UserDep, state: StateDep, session: SessionDep
) -> HTMLResponse:
    context = await _overview_context(user, state, session)
    return render(request, "overview.html", context, user=user)


@router.get("/overview/live")
async def overview_live(
    request: Request, user: UserDep, state: StateDep, session: SessionDep
) -> HTMLResponse:
    """The overview's figures, for htmx to swap in every few seconds."""
    context = await _overview_context(user, state, session)
    return render(request, "_overview_live.html", context, user=user)


@router.get("/providers")
async def providers_page(
    request: Request, user: UserDep, state: StateDep, session: SessionDep
) -> HTMLResponse:
    service = ProviderService(session, state.settings)
    providers = (await service.list(user.caller)).items
    curves = await service.completion_curves()
    return render(
        request,
        "providers.html",
        {
            "providers": providers,
            "curves": {
                name: json.dumps([round(q, 3) for q in curve], separators=(",", ":"))
                for name, curve in curves.items()
            },
            "pause_choices": PAUSE_CHOICES,
        },
        user=user,
    )


# The pause lengths the providers page offers: (seconds, label).
PAUSE_CHOICES = [(900, "15 minutes"), (3600, "1 hour"), (4 * 3600, "4 hours"), (86400, "1 day")]


@router.post("/providers/{name}/pause")
async def pause_provider(
    request: Request,
    name: str,
    form: CsrfFormDep,
    user: UserDep,
    state: StateDep,
    session: SessionDep,
) -> Response:
    async def act(change: Change) -> Response:
        try:
            for_s = PauseRequest(for_s=form.get("for_s", PauseRequest().for_s)).for_s
        except ValidationError as exc:
            raise ValidationFailed.field("for_s", "1 s to 7 days") from exc
        await ProviderService(session, state.settings).pause(change, name, for_s=for_s)
        return RedirectResponse("/ui/providers", status_code=303)

    response: Response = await _acting(
        request, user, state, session, "provider.pause", f"provider:{name}", act
    )
    return response


@router.post("/providers/{name}/resume")
async def resume_provider(
    request: Request,
    name: str,
    _: CsrfFormDep,
    user: UserDep,
    state: StateDep,
    session: SessionDep,
) -> Response:
    async def act(change: Change) -> Response:
        await ProviderService(session, state.settings).resume(change, name)
        return RedirectResponse("/ui/providers", status_code=303)

    response: Response = await _acting(
        request, user, state, session, "provider.resume", f"provider:{name}", act
    )
    return response


def _time(value: str | None) -> datetime | None:
    """A `datetime-local` field (sent without a zone; the forms label it UTC) read as UTC;
    None for one that is not a time."""
    if not value:
        return None
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        return None


@router.get("/tasks")
async def tasks_page(
    request: Request,
    user: UserDep,
    state: StateDep,
    session: SessionDep,
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    provider: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str | None, Query(max_length=32)] = None,
    created_from: Annotated[str | None, Query(max_length=40)] = None,
    created_before: Annotated[str | None, Query(max_length=40)] = None,
    external_id: Annotated[str | None, Query(max_length=256)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> HTMLResponse:
    caller = user.caller
    filters = {
        "tenant": (tenant or "").strip() if caller.tenant is None else "",
        "provider": (provider or "").strip(),
        "status": status if status in {s.value for s in TaskStatus} else "",
        "created_from": created_from or "",
        "created_before": created_before or "",
        "external_id": (external_id or "").strip(),
    }
    error = None
    items: list[Any] = []
    next_cursor = None
    try:
        page = await _task_service(state, session).list(
            caller.tenant if caller.tenant is not None else (filters["tenant"] or None),
            limit=TASKS_PER_PAGE,
            provider=filters["provider"] or None,
            status=TaskStatus(filters["status"]) if filters["status"] else None,
            cursor=cursor or None,
            created_from=_time(filters["created_from"]),
            created_before=_time(filters["created_before"]),
            external_id=filters["external_id"] or None,
        )
        items, next_cursor = page.items, page.next_cursor
    except ServiceError as exc:
        error = exc.message
    next_url = None
    if next_cursor is not None:
        query = {k: v for k, v in filters.items() if v}
        next_url = f"/ui/tasks?{urlencode({**query, 'cursor': next_cursor})}"
    return render(
        request,
        "tasks.html",
        {
            "filters": filters,
            "items": items,
            "next_url": next_url,
            "error": error,
            "providers": sorted(state.settings.providers),
            "statuses": [s.value for s in TaskStatus],
        },
        user=user,
        status_code=422 if error else 200,
    )


async def _task_context(
    user: User, state: AppState, session: SessionDep, task_id: uuid.UUID
) -> dict[str, Any] | None:
    """What the task page shows; None when the caller has no such task."""
    tasks = _task_service(state, session)
    try:
        task = await tasks.get(user.caller.tenant, task_id)
    except NotFound:
        return None
    shown = await tasks.shown(task)
    deliveries = await WebhookService(session, state.settings, state.guard).deliveries_of(task)
    entries = timeline.timeline(
        timeline.registered(shown),
        timeline.polls((await tasks.polls(task)).items),
        timeline.events(await tasks.events_of(task)),
        timeline.delivery_attempts(deliveries.items),
    )
    return {
        "task": shown,
        "tenant": task.tenant,
        "terminal": TaskStatus(task.status).is_terminal,
        "poll": {
            "polls": task.polls,
            "last_polled_at": task.last_polled_at,
            "next_poll_at": task.next_poll_at,
            "poll_error": timeline.poll_error(shown.last_poll_error),
            "last_response": timeline.summary(task.last_response),
        },
        "result": timeline.summary(
            shown.result.model_dump(mode="json", exclude_none=True) if shown.result else None,
            4096,
        ),
        "entries": entries,
    }


def _not_found(request: Request, user: User) -> HTMLResponse:
    return render(request, "not_found.html", {}, user=user, status_code=404)


@router.get("/tasks/{task_id}")
async def task_page(
    request: Request, task_id: str, user: UserDep, state: StateDep, session: SessionDep
) -> HTMLResponse:
    context = await _task_context(user, state, session, _uuid(task_id))
    if context is None:
        return _not_found(request, user)
    return render(request, "task.html", context, user=user)


@router.get("/tasks/{task_id}/live")
async def task_live(
    request: Request, task_id: str, user: UserDep, state: StateDep, session: SessionDep
) -> HTMLResponse:
    """The part of the task page that changes, for htmx to swap in every few seconds."""
    context = await _task_context(user, state, session, _uuid(task_id))
    if context is None:
        return _not_found(request, user)
    return render(request, "_task_live.html", context, user=user)


# --- deliveries, endpoints and the audit log ------------------------------------------------

DELIVERIES_PER_PAGE = 50
AUDIT_PER_PAGE = 50
# What a page says after an action that redirected back to it (`?done=`).
DONE = {
    "retried": "Queued: the delivery goes out again now.",
    "tested": "A webhook.test event is queued for the endpoint: see its attempts below.",
    "enabled": "The endpoint is enabled; what failed to it within the window goes out again.",
    "disabled": "The endpoint is disabled: nothing more is sent to it.",
}
READ_ONLY = "Your key is read-only: it sees everything and changes nothing."


def _webhooks(state: AppState, session: SessionDep) -> WebhookService:
    return WebhookService(session, state.settings, state.guard)


async def _acting(
    request: Request,
    user: User,
    state: AppState,
    session: SessionDep,
    action: str,
    target: str,
    act: Any,
) -> Any:
    """Run `act(change)` as `user`, once `permit` allows it (a read-only key is refused,
    and the refusal recorded, whatever the page showed). A refusal or a failed change is an
    error page with the error's status; nothing of the failed change is kept."""
    try:
        change = await permit(state.sessions, user.caller, action, target)
        return await act(change)
    except ServiceError as exc:
        await session.rollback()
        return render(
            request,
            "action_error.html",
            {"message": exc.message, "back": _back(request)},
            user=user,
            status_code=exc.status_code,
        )


def _back(request: Request, fallback: str = "/ui/deliveries") -> str:
    """Where an action returns to: the page it came from (a dashboard path only)."""
    referer = request.headers.get("referer", "")
    path = referer.split("://", 1)[-1].partition("/")[2]
    return safe_next("/" + path) if path.startswith("ui") else fallback


def _delivery_filter(
    caller: Caller, form: dict[str, str]
) -> tuple[dict[str, str], DeliveryFilter | None, str | None]:
    """The deliveries page's filter fields as shown, and as the service takes them (None
    with the reason when they do not make a filter)."""
    state = form.get("status") or DeliveryState.TROUBLED.value
    shown = {
        "status": state,
        "endpoint_id": (form.get("endpoint_id") or "").strip(),
        "tenant": (form.get("tenant") or "").strip() if caller.tenant is None else "",
        "task_id": (form.get("task_id") or "").strip(),
        "created_after": form.get("created_after") or "",
        "created_before": form.get("created_before") or "",
    }
    try:
        where = DeliveryFilter(
            status=DeliveryState(state),
            endpoint_id=uuid.UUID(shown["endpoint_id"]) if shown["endpoint_id"] else None,
            tenant=shown["tenant"] or None,
            task_id=uuid.UUID(shown["task_id"]) if shown["task_id"] else None,
            created_after=_time(shown["created_after"]),
            created_before=_time(shown["created_before"]),
        )
    except ValueError as exc:
        return shown, None, f"That filter is not valid: {str(exc).splitlines()[0]}"
    return shown, where, None


@router.get("/deliveries")
async def deliveries_page(
    request: Request,
    user: UserDep,
    state: StateDep,
    session: SessionDep,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    done: Annotated[str | None, Query(max_length=32)] = None,
) -> HTMLResponse:
    """Failing and failed deliveries (or any state), by endpoint: each retried on its own,
    or everything the filter matches at once after a confirmation."""
    caller = user.caller
    filters, where, error = _delivery_filter(caller, dict(request.query_params))
    webhooks = _webhooks(state, session)
    items: list[Any] = []
    next_url = None
    if where is not None:
        try:
            page = await webhooks.page(caller, where, limit=DELIVERIES_PER_PAGE, cursor=cursor)
            items = page.items
            if page.next_cursor is not None:
                query = {k: v for k, v in filters.items() if v}
                next_url = f"/ui/deliveries?{urlencode({**query, 'cursor': page.next_cursor})}"
        except ServiceError as exc:
            error = exc.message
    summary = await webhooks.summary(caller, filters["tenant"] or None)
    endpoints = {e.id: e for e in (await webhooks.list_endpoints(caller.tenant)).items}
    query = {k: v for k, v in filters.items() if v}
    return render(
        request,
        "deliveries.html",
        {
            "filters": filters,
            "query": urlencode(query),
            "items": items,
            "next_url": next_url,
            "error": error,
            "summary": summary,
            "endpoints": endpoints,
            "states": [s.value for s in DeliveryState],
            "retryable": filters["status"] in {"troubled", "failing", "failed"},
            "done": DONE.get(done or ""),
            "read_only": READ_ONLY,
        },
        user=user,
        status_code=422 if error else 200,
    )


@router.post("/deliveries/{delivery_id}/retry")
async def retry_delivery(
    request: Request,
    delivery_id: str,
    user: UserDep,
    form: CsrfFormDep,
    state: StateDep,
    session: SessionDep,
) -> Response:
    target = _uuid(delivery_id)

    async def act(change: Change) -> Response:
        await _webhooks(state, session).retry(change, target)
        back = safe_next(form.get("back") or "/ui/deliveries")
        joiner = "&" if "?" in back else "?"
        return RedirectResponse(f"{back}{joiner}done=retried", status_code=303)

    response: Response = await _acting(
        request, user, state, session, "delivery.retry", f"delivery:{target}", act
    )
    return response


@router.get("/deliveries/retry")
async def confirm_bulk_retry(
    request: Request, user: UserDep, state: StateDep, session: SessionDep
) -> HTMLResponse:
    """The confirmation step of "Retry all matching": the count, and a form that retries
    exactly what was counted (at most that many, made before the count)."""
    filters, where, error = _delivery_filter(user.caller, dict(request.query_params))
    counted = None
    if where is not None:
        try:
            counted = await _webhooks(state, session).count_retryable(
                user.caller, BulkRetry(**where.model_dump())
            )
        except ServiceError as exc:
            error = exc.message
    return render(
        request,
        "deliveries_confirm.html",
        {
            "filters": filters,
            "query": urlencode({k: v for k, v in filters.items() if v}),
            "counted": counted,
            "error": error,
            "read_only": READ_ONLY,
        },
        user=user,
        status_code=422 if error else 200,
    )


@router.post("/deliveries/retry")
async def bulk_retry(
    request: Request, user: UserDep, form: CsrfFormDep, state: StateDep, session: SessionDep
) -> Response:
    filters, where, error = _delivery_filter(user.caller, form)
    expected = form.get("expected", "")
    # isdecimal alone takes other scripts' digits, which int() does not always read.
    if where is None or not (expected.isascii() and expected.isdecimal()):
        return render(
            request,
            "action_error.html",
            {"message": error or "The count to confirm is missing.", "back": "/ui/deliveries"},
            user=user,
            status_code=422,
        )
    # The confirmation's count covers what existed then: later deliveries stay out, and so
    # do those after the filter's own end.
    ends = [t for t in (_time(form.get("as_of")), where.created_before) if t is not None]
    as_of = min(ends, default=None)
    body = BulkRetry(
        **where.model_dump(exclude={"created_before"}),
        created_before=as_of,
        expected=min(int(expected), BULK_RETRY_LIMIT),
    )
    target = "deliveries?" + urlencode({k: v for k, v in sorted(filters.items()) if v})

    async def act(change: Change) -> HTMLResponse:
        done = await _webhooks(state, session).bulk_retry(change, body)
        return render(
            request,
            "deliveries_retried.html",
            {"done": done, "query": urlencode({k: v for k, v in filters.items() if v})},
            user=user,
        )

    response: Response = await _acting(
        request, user, state, session, "delivery.bulk_retry", target, act
    )
    return response


@router.get("/endpoints")
async def endpoints_page(
    request: Request,
    user: UserDep,
    state: StateDep,
    session: SessionDep,
    done: Annotated[str | None, Query(max_length=32)] = None,
) -> HTMLResponse:
    webhooks = _webhooks(state, session)
    listed = (await webhooks.list_endpoints(user.caller.tenant)).items
    return render(
        request,
        "endpoints.html",
        {"items": listed, "done": DONE.get(done or ""), "read_only": READ_ONLY},
        user=user,
    )


@router.get("/endpoints/{endpoint_id}")
async def endpoint_page(
    request: Request,
    endpoint_id: str,
    user: UserDep,
    state: StateDep,
    session: SessionDep,
    done: Annotated[str | None, Query(max_length=32)] = None,
) -> HTMLResponse:
    """One endpoint, its actions and its latest attempts."""
    webhooks = _webhooks(state, session)
    try:
        endpoint = await webhooks.get(user.caller, _uuid(endpoint_id))
    except NotFound:
        return _not_found(request, user)
    attempts = await webhooks.recent_attempts(user.caller, endpoint.id)
    return render(
        request,
        "endpoint.html",
        {
            "endpoint": endpoint,
            "attempts": attempts.items,
            "done": DONE.get(done or ""),
            "read_only": READ_ONLY,
        },
        user=user,
    )


@router.post("/endpoints/{endpoint_id}/enabled")
async def set_endpoint_enabled(
    request: Request,
    endpoint_id: str,
    user: UserDep,
    form: CsrfFormDep,
    state: StateDep,
    session: SessionDep,
) -> Response:
    target = _uuid(endpoint_id)
    enable = form.get("enabled") == "true"

    async def act(change: Change) -> Response:
        await _webhooks(state, session).update(change, target, WebhookUpdate(enabled=enable))
        done = "enabled" if enable else "disabled"
        return RedirectResponse(f"/ui/endpoints/{target}?done={done}", status_code=303)

    response: Response = await _acting(
        request, user, state, session, "webhook.update", f"webhook:{target}", act
    )
    return response


@router.post("/endpoints/{endpoint_id}/test")
async def send_test_event(
    request: Request,
    endpoint_id: str,
    user: UserDep,
    _: CsrfFormDep,
    state: StateDep,
    session: SessionDep,
) -> Response:
    target = _uuid(endpoint_id)

    async def act(change: Change) -> Response:
        await _webhooks(state, session).send_test(change, target)
        return RedirectResponse(f"/ui/endpoints/{target}?done=tested", status_code=303)

    response: Response = await _acting(
        request, user, state, session, "webhook.test", f"webhook:{target}", act
    )
    return response


@router.post("/endpoints/{endpoint_id}/rotate")
async def rotate_endpoint_secret(
    request: Request,
    endpoint_id: str,
    user: UserDep,
    _: CsrfFormDep,
    state: StateDep,
    session: SessionDep,
) -> Response:
    """The new secret, shown once on this answer (never in a URL); the old one keeps
    signing alongside it until the grace period ends."""
    target = _uuid(endpoint_id)

    async def act(change: Change) -> HTMLResponse:
        rotated = await _webhooks(state, session).rotate_secret(change, target)
        return render(request, "endpoint_rotated.html", {"endpoint": rotated}, user=user)

    response: Response = await _acting(
        request, user, state, session, "webhook.rotate_secret", f"webhook:{target}", act
    )
    return response


@router.get("/audit")
async def audit_page(
    request: Request,
    user: UserDep,
    session: SessionDep,
    actor: Annotated[str | None, Query(max_length=80)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> HTMLResponse:
    """The audit log, newest first: operators only (a tenant is shown no such page)."""
    if not user.caller.is_operator:
        return _not_found(request, user)
    filters = {
        "actor": (actor or "").strip(),
        "action": (action or "").strip(),
        "tenant": (tenant or "").strip(),
    }
    error = None
    items: list[Any] = []
    next_url = None
    try:
        page = await AuditLog(session).page(
            limit=AUDIT_PER_PAGE,
            cursor=cursor or None,
            tenant=filters["tenant"] or None,
            actor=filters["actor"] or None,
            action=filters["action"] or None,
        )
        items = page.items
        if page.next_cursor is not None:
            query = {k: v for k, v in filters.items() if v}
            next_url = f"/ui/audit?{urlencode({**query, 'cursor': page.next_cursor})}"
    except ServiceError as exc:
        error = exc.message
    return render(
        request,
        "audit.html",
        {"filters": filters, "items": items, "next_url": next_url, "error": error},
        user=user,
        status_code=422 if error else 200,
    )


def _uuid(value: str) -> uuid.UUID:
    """A task id from the path; a malformed one is no task (the nil id is never one)."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return uuid.UUID(int=0)


def serve_dashboard(app: FastAPI) -> None:
    """Mount the dashboard on `app`: its routes, its static files, and the answers to a
    request that is not signed in or carries no valid CSRF token."""
    app.include_router(router)
    app.mount(
        STATIC_PATH,
        StaticFiles(directory=Path(__file__).parent / "static"),
        name="ui-static",
    )

    async def sign_in_first(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        location = f"/ui/signin?{urlencode({'next': exc.next_path})}"
        if request.headers.get("HX-Request"):
            # htmx would swap the form into the fragment: send the whole page there instead.
            return Response(status_code=401, headers={"HX-Redirect": location})
        if request.method != "GET":
            return Response("Sign in again.", status_code=401, media_type="text/plain")
        return RedirectResponse(location, status_code=303)

    async def refuse_csrf(_request: Request, _exc: Exception) -> Response:
        return Response(
            "This form is stale or was not sent by the dashboard: reload the page and retry.",
            status_code=403,
            media_type="text/plain",
        )

    app.add_exception_handler(SignInRequired, sign_in_first)
    app.add_exception_handler(CsrfRefused, refuse_csrf)
