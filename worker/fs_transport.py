"""The embedded broker: kombu's filesystem transport, with each message put in place whole.

kombu's own ``_put`` creates ``<time>_<uuid>.<queue>.msg`` in the folder consumers list and
then writes into it, so a worker polling at that moment can take the empty file and fail to
decode it; the consumer then stops and the job waits for the reconciler. Here the message is
written under a name no consumer looks at, flushed, and renamed to its ``.msg`` name: one
rename, so a consumer sees the whole message or nothing.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.part")  # never *.<queue>.msg
        try:
            with open(partial, "xb", buffering=0) as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.rename(partial, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
