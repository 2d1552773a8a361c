from __future__ import annotations

from typing import Any

import httpx


async def test_every_route_is_described(client: httpx.AsyncClient) -> None:
    doc: dict[str, Any] = (await client.get("/openapi.json")).json()
    paths = doc["paths"]
    assert set(paths) >= {"/healthz", "/readyz", "/v1/tasks", "/v1/tasks/{task_id}"}
    assert set(paths["/v1/tasks"]) == {"get", "post"}
    assert set(paths["/v1/tasks/{task_id}"]) == {"get", "delete"}
    schemas = doc["components"]["schemas"]
    assert {"TaskCreate", "TaskRead", "TaskList", "ErrorResponse"} <= set(schemas)
    assert "HTTPValidationError" not in schemas
    assert schemas["TaskCreate"]["additionalProperties"] is False
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"

    for path, operations in paths.items():
        for method, op in operations.items():
            assert op.get("summary"), (method, path)
            responses = op["responses"]
            for status, response in responses.items():
                ref = str(response.get("content", {}).get("application/json", {}).get("schema"))
                if status.startswith(("4", "5")):
                    assert "ErrorResponse" in ref, (method, path, status)
            if path.startswith("/v1/"):
                assert op["security"] == [{"bearerAuth": []}]
                assert "401" in responses, (method, path)
                assert "503" in responses, (method, path)
                # The per-tenant rate limit applies to every authenticated route.
                assert "Retry-After" in responses["429"]["headers"], (method, path)
            else:
                assert "429" not in responses, (method, path)
    assert {"201", "200", "409", "413", "415", "422"} <= set(
        paths["/v1/tasks"]["post"]["responses"]
    )
    assert "404" in paths["/v1/tasks/{task_id}"]["get"]["responses"]
    assert "409" in paths["/v1/tasks/{task_id}"]["delete"]["responses"]


async def test_no_dangling_schema_references(client: httpx.AsyncClient) -> None:
    import json
    import re

    doc = (await client.get("/openapi.json")).json()
    referenced = set(re.findall(r"#/components/schemas/(\w+)", json.dumps(doc)))
    assert referenced <= set(doc["components"]["schemas"])
    assert "/v1/providers" in doc["paths"]


async def test_webhook_payloads_are_documented(client: httpx.AsyncClient) -> None:
    """Every event type pollhook sends is under the document's `webhooks`, with the body
    schema and the Standard Webhooks headers a consumer verifies."""
    from app.webhooks.events import EventType

    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["webhooks"]) == {e.value for e in EventType}
    for name, entry in doc["webhooks"].items():
        operation = entry["post"]
        assert operation["summary"].startswith(name)
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        # A test event names its endpoint, not a task.
        model = "EndpointTestEvent" if name == EventType.TEST else "WebhookEvent"
        assert body == {"$ref": f"#/components/schemas/{model}"}
        headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
        assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
        assert "422" not in operation["responses"]
    event = doc["components"]["schemas"]["WebhookEvent"]
    assert event["required"] == ["type", "timestamp", "data"]
    # The payload has its own schema, with exactly the fields the API shows for a task.
    assert event["properties"]["data"]["$ref"] == "#/components/schemas/TaskSnapshot"
    snapshot = doc["components"]["schemas"]["TaskSnapshot"]
    assert snapshot["properties"] == doc["components"]["schemas"]["TaskRead"]["properties"]
    assert event["additionalProperties"] is False


async def test_result_is_typed_per_provider(client: httpx.AsyncClient) -> None:
    """`result` is one of the providers' own result objects, told apart by `kind`, with
    every field named and described."""
    doc: dict[str, Any] = (await client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    [typed, null] = schemas["TaskRead"]["properties"]["result"]["anyOf"]
    assert null == {"type": "null"}
    assert typed["discriminator"] == {
        "propertyName": "kind",
        "mapping": {
            "minimax_t2a": "#/components/schemas/MinimaxT2AResult",
            "jimmy_soundclone": "#/components/schemas/JimmySoundCloneResult",
            "minimax_video": "#/components/schemas/MinimaxVideoResult",
            "replicate": "#/components/schemas/ReplicateResult",
            "dashscope": "#/components/schemas/DashscopeResult",
            "assemblyai": "#/components/schemas/AssemblyAIResult",
            "fal": "#/components/schemas/FalResult",
            "elevenlabs_dubbing": "#/components/schemas/ElevenLabsDubbingResult",
        },
    }
    assert typed["oneOf"] == [
        {"$ref": "#/components/schemas/MinimaxT2AResult"},
        {"$ref": "#/components/schemas/JimmySoundCloneResult"},
        {"$ref": "#/components/schemas/MinimaxVideoResult"},
        {"$ref": "#/components/schemas/ReplicateResult"},
        {"$ref": "#/components/schemas/DashscopeResult"},
        {"$ref": "#/components/schemas/AssemblyAIResult"},
        {"$ref": "#/components/schemas/FalResult"},
        {"$ref": "#/components/schemas/ElevenLabsDubbingResult"},
    ]
    expected = {
        "MinimaxT2AResult": (
            {"kind", "file_id", "download_url", "download_url_expires_at", "filename", "archive"},
            {"kind", "file_id", "download_url", "download_url_expires_at"},
        ),
        "JimmySoundCloneResult": (
            {"kind", "audio_url", "model_id", "subtitle_url", "archive"},
            {"kind", "audio_url"},
        ),
        "MinimaxVideoResult": (
            {
                "kind",
                "file_id",
                "download_url",
                "download_url_expires_at",
                "filename",
                "video_width",
                "video_height",
                "archive",
            },
            {"kind", "file_id", "download_url", "download_url_expires_at"},
        ),
        "ReplicateResult": (
            {
                "kind",
                "output_urls",
                "output",
                "output_expires_at",
                "model",
                "version",
                "predict_time_s",
                "created_at",
                "started_at",
                "completed_at",
                "get_url",
                "archive",
            },
            {"kind", "output_urls", "output", "output_expires_at"},
        ),
        "DashscopeResult": ({"kind", "files", "partial", "archive"}, {"kind", "files", "partial"}),
        "DashscopeFile": (
            {
                "status",
                "file_url",
                "transcription_url",
                "transcription_url_expires_at",
                "code",
                "message",
            },
            {"status"},
        ),
        "AssemblyAIResult": (
            {
                "kind",
                "text",
                "language_code",
                "audio_duration",
                "confidence",
                "audio_url",
                "speech_model_used",
                "word_count",
                "utterances",
                "archive",
            },
            {"kind", "text"},
        ),
        "FalResult": (
            {"kind", "model", "request_id", "files", "output", "archive"},
            {"kind", "model", "request_id", "files", "output"},
        ),
        "ElevenLabsDubbingResult": (
            {
                "kind",
                "dubbing_id",
                "name",
                "source_language",
                "media_content_type",
                "media_duration_s",
                "languages",
                "archive",
            },
            {"kind", "dubbing_id", "languages"},
        ),
        "ElevenLabsDubbedLanguage": (
            {"language", "audio_url", "transcript_url"},
            {"language", "audio_url", "transcript_url"},
        ),
    }
    for name, (fields, required) in expected.items():
        schema = schemas[name]
        assert set(schema["properties"]) == fields, name
        assert set(schema["required"]) == required, name
        assert schema["additionalProperties"] is False, name
        assert all(p.get("description") for p in schema["properties"].values()), name
    assert schemas["MinimaxT2AResult"]["properties"]["kind"]["const"] == "minimax_t2a"
    assert schemas["JimmySoundCloneResult"]["properties"]["kind"]["const"] == "jimmy_soundclone"
    assert schemas["MinimaxVideoResult"]["properties"]["kind"]["const"] == "minimax_video"
    assert schemas["ReplicateResult"]["properties"]["kind"]["const"] == "replicate"
    assert schemas["DashscopeResult"]["properties"]["kind"]["const"] == "dashscope"
    assert schemas["AssemblyAIResult"]["properties"]["kind"]["const"] == "assemblyai"
    assert schemas["FalResult"]["properties"]["kind"]["const"] == "fal"
    elevenlabs = schemas["ElevenLabsDubbingResult"]["properties"]["kind"]
    assert elevenlabs["const"] == "elevenlabs_dubbing"
