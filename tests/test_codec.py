"""Payload encryption (core/codec.py): what Temporal stores is ciphertext, failure
messages included; keys rotate without losing old histories; the codec server decodes
for the Temporal UI, for ops only; workflow code never imports the cipher."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import History
from temporalio.client import Client, WorkflowFailureError, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from api.main import create_app
from core.codec import (
    CodecError,
    EncryptionCodec,
    KeyRing,
    decode_message,
    key_ring,
    write_key_ring,
)
from core.settings import Environment, Settings
from core.temporal import data_converter
from tests.codec_probe import ACCOUNT, NAME, CodecProbe, probe_fail
from tests.fixtures.api import auth
from tests.fixtures.factories import create_users
from tests.history_store import HISTORIES
from workflows.all import ALL_WORKFLOWS

ROOT = Path(__file__).resolve().parent.parent


# ----- the key ring ------------------------------------------------------------------------


def test_a_key_ring_parses_its_own_dump_and_refuses_bad_keys() -> None:
    ring = KeyRing.generate("k1").rotated("k2")
    assert KeyRing.parse(ring.dump()) == ring
    assert ring.current_id == "k2"
    assert KeyRing.parse("# a comment\nk1:" + base64.b64encode(bytes(32)).decode()).keys
    for bad in ("", "k1", "k1:not-base64!", "k1:" + base64.b64encode(bytes(16)).decode()):
        with pytest.raises(CodecError):
            KeyRing.parse(bad)
    twice = "k1:" + base64.b64encode(bytes(32)).decode()
    with pytest.raises(CodecError, match="twice"):
        KeyRing.parse(f"{twice},{twice}")


def test_keys_come_from_settings_and_a_missing_ring_is_made_once_outside_production(
    tmp_path: Path,
) -> None:
    settings = Settings(environment=Environment.DEVELOPMENT, var_dir=tmp_path)
    settings.codec_key_file = None
    settings.codec_keys = None
    first = key_ring(settings)
    assert (tmp_path / "codec-keys").stat().st_mode & 0o777 == 0o600
    assert key_ring(settings) == first  # made once, then read
    given = KeyRing.generate("env")
    from_env = Settings(environment=Environment.DEVELOPMENT, codec_keys=SecretStr(given.dump()))
    assert key_ring(from_env) == given
    production = Settings.model_construct(
        environment=Environment.PRODUCTION, var_dir=tmp_path, codec_keys=None, codec_key_file=None
    )
    with pytest.raises(CodecError, match="production"):
        key_ring(production)


async def test_a_payload_is_sealed_under_the_current_key_and_tampering_is_caught() -> None:
    ring = KeyRing.generate("old")
    codec = EncryptionCodec(ring)
    clear = Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(ACCOUNT).encode())
    [sealed] = await codec.encode([clear])
    assert sealed.metadata["encoding"] == b"binary/encrypted"
    assert sealed.metadata["encryption-key-id"] == b"old"
    assert ACCOUNT.encode() not in sealed.SerializeToString()
    assert b"json/plain" not in sealed.SerializeToString()  # the type is hidden too
    assert (await codec.decode([sealed])) == [clear]
    # a payload written before encryption passes as it is
    assert (await codec.decode([clear])) == [clear]
    # rotated: new payloads under the new key, old ones still readable
    rotated = EncryptionCodec(ring.rotated("new"))
    [resealed] = await rotated.encode([clear])
    assert resealed.metadata["encryption-key-id"] == b"new"
    assert (await rotated.decode([sealed])) == [clear]
    with pytest.raises(CodecError, match="lacks"):
        await codec.decode([resealed])
    tampered = Payload()
    tampered.CopyFrom(sealed)
    tampered.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(CodecError, match="authentication"):
        await codec.decode([tampered])
    relabelled = Payload()
    relabelled.CopyFrom(sealed)
    relabelled.metadata["encryption-key-id"] = b"new"  # the key id is authenticated
    with pytest.raises(CodecError):
        await rotated.decode([relabelled])


# ----- through Temporal --------------------------------------------------------------------


async def _run_probe(env: WorkflowEnvironment, ring: KeyRing) -> tuple[Client, WorkflowHistory]:
    config = env.client.config()
    config["data_converter"] = data_converter(ring)
    client = Client(**config)
    queue = f"codec-{uuid.uuid4()}"
    async with Worker(client, task_queue=queue, workflows=[CodecProbe], activities=[probe_fail]):
        handle = await client.start_workflow(
            CodecProbe.run, args=[NAME, ACCOUNT], id=f"codec-{uuid.uuid4()}", task_queue=queue
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    # the client decodes the failure message for its users
    assert ACCOUNT in str(failed.value.cause)
    return client, await handle.fetch_history()


async def test_temporal_stores_only_ciphertext_failure_messages_included(
    time_skipping: WorkflowEnvironment,
) -> None:
    _, history = await _run_probe(time_skipping, KeyRing.generate("k1"))
    stored = History(events=history.events).SerializeToString()
    assert ACCOUNT.encode() not in stored
    assert NAME.encode() not in stored
    assert b"bank refused" not in stored and b"payment to" not in stored


async def test_a_history_written_under_an_old_key_decodes_and_replays_after_rotation(
    time_skipping: WorkflowEnvironment,
) -> None:
    old = KeyRing.generate("2026a")
    _, history = await _run_probe(time_skipping, old)
    rotated = old.rotated("2026b")
    replayer = Replayer(workflows=[CodecProbe], data_converter=data_converter(rotated))
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None
    proto = History(events=history.events)
    decode_message(EncryptionCodec(rotated), proto)
    decoded = proto.SerializeToString()
    assert ACCOUNT.encode() in decoded
    assert f"{NAME}: payment to {ACCOUNT} failed".encode() in decoded
    assert f"bank refused account {ACCOUNT}".encode() in decoded
    # without the old key, neither works
    without = Replayer(
        workflows=[CodecProbe], data_converter=data_converter(KeyRing.generate("2026b"))
    )
    result = await without.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None


def test_every_stored_history_is_sealed() -> None:
    """tests/histories/ hold no clear payload or failure message (core_patch markers,
    written by the SDK's core, and search attributes excepted)."""
    for path in sorted(HISTORIES.glob("*.json")):
        proto = History(events=WorkflowHistory.from_json(path.stem, path.read_text()).events)
        clear = []
        for event in proto.events:
            if event.HasField("marker_recorded_event_attributes"):
                continue
            event.ClearField("upsert_workflow_search_attributes_event_attributes")
            attributes = event.workflow_execution_started_event_attributes
            attributes.ClearField("search_attributes")
            attributes.ClearField("header")
            text = event.SerializeToString()
            if b"json/plain" in text or b"binary/null" in text:
                clear.append(event.event_id)
        assert clear == [], f"{path.name}: clear payloads in events {clear}"


async def test_stored_histories_replay_under_a_rotated_ring() -> None:
    ring = key_ring(Settings()).rotated("after-rotation")
    replayer = Replayer(workflows=ALL_WORKFLOWS, data_converter=data_converter(ring))
    histories = [
        WorkflowHistory.from_json(path.stem, path.read_text())
        for path in sorted(HISTORIES.glob("*.json"))
    ]
    async with replayer.workflow_replay_iterator(_iter(histories)) as results:
        async for result in results:
            assert result.replay_failure is None


async def _iter(histories: list[WorkflowHistory]):  # type: ignore[no-untyped-def]
    for history in histories:
        yield history


def test_workflow_code_never_imports_the_cipher() -> None:
    probe = (
        "import sys, workflows.all, workflows.starts\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('cryptography', 'core.codec')"
        " or m == 'core.codec')\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


# ----- the codec server ------------------------------------------------------------------


def _body(*payloads: Payload) -> dict[str, object]:
    return {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                "data": base64.b64encode(p.data).decode(),
            }
            for p in payloads
        ]
    }


async def _loopback_post(
    app: object, path: str, body: dict[str, object], authorization: str
) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        return await client.post(path, json=body, headers={"Authorization": authorization})


def _clear(value: object) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode())


async def test_the_codec_server_answers_the_ui_origin_only_and_wants_a_token_off_loopback(
    tmp_path: Path,
) -> None:
    """The UI's CORS preflight passes for its origin only; a call from another host with
    no token is refused, while the embedded stack's UI (loopback, no token) is served."""
    ring_file = tmp_path / "keys"
    write_key_ring(ring_file, KeyRing.generate("ui"))
    settings = Settings(
        environment=Environment.TEST,
        codec_key_file=ring_file,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}",
    )
    [sealed] = await EncryptionCodec(key_ring(settings)).encode([_clear({"account": ACCOUNT})])
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        basic = await _loopback_post(app, "/codec/decode", _body(sealed), "Basic YTpi")
        assert basic.status_code == 401  # credentials of any kind are checked
        for host, status in (("10.0.0.8", 401), ("127.0.0.1", 200)):
            transport = httpx.ASGITransport(app=app, client=(host, 5000))
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                response = await client.post("/codec/decode", json=_body(sealed))
                assert response.status_code == status, (host, response.text)
                preflight = await client.options(
                    "/codec/decode",
                    headers={
                        "Origin": "http://127.0.0.1:8233",
                        "Access-Control-Request-Method": "POST",
                        "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
                    },
                )
                assert preflight.status_code == 200
                assert preflight.headers["x-content-type-options"] == "nosniff"
                assert preflight.headers["x-request-id"]
                allowed = preflight.headers["access-control-allow-origin"]
                assert allowed == "http://127.0.0.1:8233"
                assert "x-namespace" in preflight.headers["access-control-allow-headers"].lower()
                foreign = await client.options(
                    "/codec/decode",
                    headers={
                        "Origin": "http://evil.example",
                        "Access-Control-Request-Method": "POST",
                    },
                )
                assert "access-control-allow-origin" not in foreign.headers
    production = settings.model_copy(update={"environment": Environment.PRODUCTION})
    app = create_app(production)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            response = await client.post("/codec/decode", json=_body(sealed))
            assert response.status_code == 401  # production: a token, always


async def test_the_codec_server_decodes_and_encodes_for_ops_only(
    api: httpx.AsyncClient, settings: Settings, session: AsyncSession
) -> None:
    codec = EncryptionCodec(key_ring(settings))
    [sealed] = await codec.encode([_clear({"account": ACCOUNT})])
    await create_users(session)
    decoded = await api.post(
        "/codec/decode",
        json=_body(sealed),
        headers={
            **auth(settings, "ops"),
            "X-Namespace": "zhida",
            "Origin": "http://127.0.0.1:8233",
        },
    )
    assert decoded.status_code == 200, decoded.text
    [payload] = decoded.json()["payloads"]
    assert json.loads(base64.b64decode(payload["data"])) == {"account": ACCOUNT}
    assert decoded.headers["access-control-allow-origin"] == "http://127.0.0.1:8233"
    encoded = await api.post(
        "/codec/encode", json=_body(_clear("x")), headers=auth(settings, "ops")
    )
    assert encoded.status_code == 200
    [again] = encoded.json()["payloads"]
    assert base64.b64decode(again["metadata"]["encoding"]) == b"binary/encrypted"
    for user in ("auditor", "czj_staff", "admin"):
        refused = await api.post("/codec/decode", json=_body(sealed), headers=auth(settings, user))
        assert refused.status_code == 403, user
    # a payload under a key the ring lacks names the payload
    [foreign] = await EncryptionCodec(KeyRing.generate("zz")).encode([_clear(1)])
    bad = await api.post(
        "/codec/decode", json=_body(sealed, foreign), headers=auth(settings, "ops")
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "payloads[1]"
    garbage = await api.post(
        "/codec/decode",
        json={"payloads": [{"metadata": "not a map"}]},
        headers=auth(settings, "ops"),
    )
    assert garbage.status_code == 422


def test_rotating_the_key_file_keeps_the_old_keys_for_decryption(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli.main import app as cli

    path = tmp_path / "keys"
    runner = CliRunner()
    first = runner.invoke(cli, ["rotate-codec-key", "--id", "2026a", "--file", str(path)])
    assert first.exit_code == 0, first.output
    old = KeyRing.parse(path.read_text())
    second = runner.invoke(cli, ["rotate-codec-key", "--id", "2026b", "--file", str(path)])
    assert "encrypting with 2026b; decrypting with 2026b, 2026a" in second.output
    rotated = KeyRing.parse(path.read_text())
    assert rotated.keys[1] == old.keys[0] and path.stat().st_mode & 0o777 == 0o600
    again = runner.invoke(cli, ["rotate-codec-key", "--id", "2026b", "--file", str(path)])
    assert again.exit_code == 1 and "already has" in again.output
    assert KeyRing.parse(path.read_text()) == rotated
