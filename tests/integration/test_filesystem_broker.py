"""The embedded broker delivers every message whole while a consumer polls as a producer writes.

Producer and consumer are separate processes, as the API and a worker are."""
from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

from kombu import Connection

from shared.infra.filesystem_broker import TRANSPORT

MESSAGES = 300
PADDING = "x" * 300_000  # a large message widens the moment a file exists but is not yet written


def _connection(folder: Path, transport: str) -> Connection:
    return Connection(transport=transport, transport_options={
        "data_folder_in": str(folder / "messages"), "data_folder_out": str(folder / "messages"),
        "control_folder": str(folder / "control"), "store_processed": False})


def _produce(folder: Path, transport: str) -> None:
    with _connection(folder, transport) as conn:
        queue = conn.SimpleQueue("segment")
        for n in range(MESSAGES):
            queue.put({"n": n, "padding": PADDING})
    (folder / "produced").touch()


def _consume(folder: Path, transport: str) -> None:
    received, broken = [], []
    deadline = time.monotonic() + 120  # a producer that dies must not leave this process polling forever
    with _connection(folder, transport) as conn:
        queue = conn.SimpleQueue("segment")
        while time.monotonic() < deadline:
            try:
                message = queue.get(block=False)
            except queue.Empty:
                if (folder / "produced").exists() and not any((folder / "messages").glob("*.msg")):
                    break
                continue
            except Exception as exc:  # noqa: BLE001 - a message read before it was written: gone
                broken.append(type(exc).__name__)
                continue
            received.append(message.payload["n"])
            message.ack()
    (folder / "consumed.json").write_text(json.dumps({"received": received, "broken": broken}))


def deliver_while_polling(folder: Path, transport: str) -> dict:
    for sub in ("messages", "control"):
        (folder / sub).mkdir()
    spawn = multiprocessing.get_context("spawn")
    consumer = spawn.Process(target=_consume, args=(folder, transport))
    consumer.start()
    time.sleep(1.0)  # the consumer is polling before the first message is written
    producer = spawn.Process(target=_produce, args=(folder, transport))
    producer.start()
    producer.join(120)
    consumer.join(120)
    return json.loads((folder / "consumed.json").read_text())


def test_every_message_arrives_whole_and_once_while_the_consumer_polls(tmp_path):
    outcome = deliver_while_polling(tmp_path, TRANSPORT)
    assert outcome["broken"] == []
    assert sorted(outcome["received"]) == list(range(MESSAGES))
    assert not list((tmp_path / "messages").iterdir()), "a partial or undelivered message file was left behind"


def test_the_embedded_celery_configuration_uses_this_transport(tmp_path):
    from shared.infra.settings import Settings
    from shared.infra.queue import celery_config

    assert celery_config(Settings(data_dir=tmp_path))["broker_transport"] == TRANSPORT
    assert "broker_transport" not in celery_config(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/0"))
