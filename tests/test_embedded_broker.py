"""The embedded broker never hands a consumer half a message: a worker polling the queue
folder while messages are written takes each one whole (kombu's own filesystem transport
could give it the file it had just created and not yet written, and the worker's consumer
then stopped: with bodies this large it did, about once in 30 messages here)."""

from __future__ import annotations

import threading

from kombu import Connection
from kombu.transport import filesystem
from kombu.transport.virtual.base import Empty

from shell.settings import Settings
from worker.celery_app import make_app, prepare
from worker.fs_transport import Transport

BIG = "x" * 20_000_000  # a large body widens the moment a file exists but is not written


def race(transport_cls, folder, messages: int = 40) -> tuple[int, list[Exception]]:
    """Write ``messages`` while another thread takes them as fast as it can."""
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder),
               "processed_folder": str(folder), "store_processed": False}
    received, errors = [], []
    done = threading.Event()
    with Connection(transport=transport_cls, transport_options=options) as producer_conn, \
            Connection(transport=transport_cls, transport_options=options) as consumer_conn:
        writer, reader = producer_conn.default_channel, consumer_conn.default_channel

        def consume():
            while not done.is_set() or len(received) + len(errors) < messages:
                # whether the writer had finished before this look: only then does an empty
                # folder mean there is nothing more (a look that began before the last
                # rename can miss it, and the writer may finish while it looks)
                finished = done.is_set()
                try:
                    received.append(reader._get("q"))
                except Empty:
                    if finished:
                        break
                except Exception as exc:  # noqa: BLE001 - what the race produces
                    errors.append(exc)
        thread = threading.Thread(target=consume)
        thread.start()
        for number in range(messages):
            writer._put("q", {"n": number, "body": BIG})
        done.set()
        thread.join(60)
    return len(received), errors


def test_messages_are_renamed_into_place_whole(tmp_path):
    received, errors = race(Transport, tmp_path)
    assert errors == [] and received == 40
    assert not list(tmp_path.iterdir())  # no partial file left behind


def test_the_app_uses_it_for_the_embedded_queue(tmp_path):
    settings = Settings(data_dir=tmp_path)
    prepare(settings)
    with make_app(settings).connection() as connection:
        assert isinstance(connection.transport, Transport)
        assert issubclass(Transport, filesystem.Transport)
