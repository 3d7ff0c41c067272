"""The embedded broker: kombu's file-system transport, with messages that appear whole.

kombu writes a message file in place, and its consumers take any file whose name matches without a lock. A
worker polling at that instant moves away a file whose bytes are not written yet, fails to parse it, and
the message is gone; only the sweeper brings the job back, a lease (5 minutes) later. Here a message is
written under a name no consumer matches and renamed into place, which is atomic on one file system.
"""
from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

from shared.infra.private import FILE_MODE, open_private

PARTIAL_SUFFIX = ".part"  # consumers match names ending in "<queue>.msg" only


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = final + PARTIAL_SUFFIX
        try:
            with open_private(partial) as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


    def _queue_bind(self, exchange, routing_key, pattern, queue):
        super()._queue_bind(exchange, routing_key, pattern, queue)
        try:
            os.chmod(self._exchange_file(exchange), FILE_MODE)  # kombu creates the exchange's file with open()
        except OSError:
            pass


class Transport(filesystem.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
