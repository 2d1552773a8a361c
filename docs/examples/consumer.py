"""A pollhook webhook consumer (FastAPI): verify, then deduplicate, then order.

pip install fastapi uvicorn standardwebhooks
POLLHOOK_WEBHOOK_SECRET=whsec_... uvicorn consumer:app --port 9000
"""

import os

from fastapi import FastAPI, Request, Response
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

webhook = Webhook(os.environ["POLLHOOK_WEBHOOK_SECRET"])
seen_ids: set[str] = set()  # in production: a table with a unique key on webhook-id
last_sequence: dict[str, int] = {}  # task id -> the highest sequence applied
app = FastAPI()


@app.post("/hooks/pollhook")
async def pollhook_webhook(request: Request) -> Response:
    body = await request.body()  # the raw bytes: parsed and re-serialised JSON fails the check
    try:
        event = webhook.verify(body, request.headers)  # the signature, and a timestamp ±5 min
    except WebhookVerificationError:
        return Response(status_code=400)
    event_id = request.headers["webhook-id"]  # the same on every retry of one event
    if event_id not in seen_ids:
        task = event["data"]
        if task["sequence"] > last_sequence.get(task["id"], -1):  # drop stale events
            last_sequence[task["id"]] = task["sequence"]
            handle(event["type"], task)
        seen_ids.add(event_id)
    return Response(status_code=204)  # any 2xx within 15 s; anything else is retried


def handle(event_type: str, task: dict) -> None:
    print(event_type, task["id"], task["status"], flush=True)
