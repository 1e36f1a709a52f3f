"""reminderd.testing, the harness the tests share with `reminderd demo` and the bench."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import aiohttp
from support import TEST_SECRET

from reminderd.signing import sign
from reminderd.testing import Receiver

DEV_ONLY = ("pytest", "standardwebhooks", "hypothesis")


def test_the_harness_imports_no_test_only_package() -> None:
    """`reminderd demo` runs without the dev extras, and it uses the harness."""
    code = (
        "import sys, reminderd.testing, reminderd.demo; "
        f"print(sorted(m for m in {DEV_ONLY!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


async def _post(url: str, body: bytes, webhook_id: str, timestamp_s: int, signature: str) -> int:
    headers = {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp_s), "webhook-signature": signature}
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
        return response.status


async def test_the_receiver_checks_signatures_and_answers_as_scripted() -> None:
    body = json.dumps({"ref_id": "flaky"}).encode()
    seen: list[str] = []
    receiver = Receiver(TEST_SECRET, script={"flaky": [503]}, on_receive=lambda it: seen.append(it.webhook_id))
    async with receiver as r:
        now_s = int(time.time())
        good = sign(TEST_SECRET, "msg_1", now_s, body)
        first = await _post(r.url, body, "msg_1", now_s, good)
        second = await _post(r.url, body, "msg_1", now_s, good)
        tampered = await _post(r.url, body + b" ", "msg_1", now_s, good)
        unsigned = await _post(r.url, body, "msg_3", now_s, "")
        await r.wait_for(lambda got: len(got) == 4)

    assert (first, second, tampered, unsigned) == (503, 200, 200, 200)
    assert [(item.status, item.verified) for item in r.received] == [
        (503, True), (200, True), (200, False), (200, False),
    ]
    assert seen == ["msg_1", "msg_1", "msg_1", "msg_3"]
    assert r.by_ref()["flaky"][0].message == {"ref_id": "flaky"}


async def test_without_a_secret_the_receiver_does_not_judge_signatures() -> None:
    async with Receiver() as r:
        await _post(r.url, b'{"ref_id": "x"}', "msg_1", int(time.time()), "v1,whatever")
    assert [item.verified for item in r.received] == [None]
