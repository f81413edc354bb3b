"""The exam simulator as a real HTTP service (uvicorn on a free port) driven by the server's ExamClient."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import uvicorn

from firmware_protocols import envelope
from server.exam_client import (
    RETRY_BASE_SECONDS,
    RETRY_MAX_SECONDS,
    ExamClient,
    ExamRefused,
    ExamReply,
    ExamUnavailable,
    NoticeSigner,
    StageReviewNotice,
    digest_of,
    next_retry_delay,
    verify_notice,
)
from simulators.exam import create_app

STUDENT = "S000000000000001"
TERMINAL = "T000000000000001"
STARTUP_TIMEOUT = 10.0


def wait_for(condition: Callable[[], bool], timeout: float = STARTUP_TIMEOUT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


@contextmanager
def exam_sim(state_dir: Path | None, server_key: envelope.PublicKey | None = None) -> Iterator[str]:
    """Serve the simulator on a free port in a thread (checking the server's signature when given its key); yields
    its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(state_dir, server_key=server_key)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, what="uvicorn to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_TIMEOUT)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


def records(n: int, first: int = 1) -> list[str]:
    return [f"{TERMINAL}261127{i:04d}" for i in range(first, first + n)]


def notice(notice_id: str = "N-1", part: int = 2, recs: list[str] | None = None) -> StageReviewNotice:
    return StageReviewNotice.create(
        notice_id=notice_id,
        student=STUDENT,
        school="SCH0000000000001",
        licence_class="C1",
        part=part,
        valid_minutes=15,
        xueshi=3,
        records=records(15) if recs is None else recs,
        submitted_at=datetime(2026, 11, 27, 8, 0, tzinfo=UTC),
    )


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[str]:
    with exam_sim(tmp_path / "exam") as url:
        yield url


@pytest.fixture
def client(sim: str) -> Iterator[ExamClient]:
    with ExamClient(sim, timeout=5.0) as c:
        yield c


def test_accepted_and_listed(sim: str, client: ExamClient) -> None:
    reply = client.submit(notice())
    assert reply == ExamReply("accepted", ())
    listed = httpx.get(f"{sim}/api/v1/stage-reviews").json()
    assert [(n["notice_id"], n["status"]) for n in listed] == [("N-1", "accepted")]
    assert listed[0]["notice"]["records"] == records(15)
    eligibility = httpx.get(f"{sim}/api/v1/eligibility/{STUDENT}").json()
    assert eligibility["parts_accepted"] == [2]
    assert eligibility["notices"] == {"2": "N-1"}


def test_resubmit_is_idempotent(sim: str, client: ExamClient) -> None:
    first = client.submit(notice())
    later = replace(notice(), submitted_at=datetime(2026, 11, 28, 8, 0, tzinfo=UTC))  # a retry stamps a new time
    assert client.submit(notice()) == first
    assert client.submit(later) == first
    assert len(httpx.get(f"{sim}/api/v1/stage-reviews").json()) == 1


def test_another_body_under_the_same_id_is_409(client: ExamClient) -> None:
    client.submit(notice())
    with pytest.raises(ExamRefused) as caught:
        client.submit(notice(recs=records(16)))
    assert caught.value.status_code == 409
    assert caught.value.reasons == ("notice_id_conflict",)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"records_digest": "0" * 64}, "records_digest_mismatch"),
        ({"student": "s0000000000001"}, "bad_student"),
        ({"student": "s000000000000001"}, "bad_student"),
        ({"licence_class": "Z9"}, "bad_licence_class"),
        ({"records": ("SHORT",), "records_digest": digest_of(["SHORT"])}, "bad_record_no"),
        ({"part": 5}, "bad_part"),
    ],
)
def test_malformed_notices_are_422_with_reasons(client: ExamClient, change: dict[str, object], reason: str) -> None:
    bad = replace(notice(), **change)  # type: ignore[arg-type]
    with pytest.raises(ExamRefused) as caught:
        client.submit(bad)
    assert caught.value.status_code == 422
    assert any(r.startswith(reason) for r in caught.value.reasons), caught.value.reasons


def test_duplicate_records_are_422(client: ExamClient) -> None:
    recs = records(3) + records(1)
    bad = replace(notice(), records=tuple(recs), records_digest=digest_of(recs))
    with pytest.raises(ExamRefused, match="duplicate_records"):
        client.submit(bad)


def test_no_records_and_reused_records_are_rejected(sim: str, client: ExamClient) -> None:
    assert client.submit(notice("N-empty", recs=[])) == ExamReply("rejected", ("no_records",))
    assert client.submit(notice("N-1")).status == "accepted"
    reused = client.submit(notice("N-2", part=3, recs=records(15, first=10)))
    assert (reused.status, reused.reasons) == ("rejected", ("record_reused",))
    assert reused.rejected_records == dict.fromkeys(records(6, first=10), "record_reused")  # the six used by N-1
    assert httpx.get(f"{sim}/api/v1/eligibility/{STUDENT}").json()["parts_accepted"] == [2]


def test_injected_rejections_name_the_records_at_fault(sim: str, client: ExamClient) -> None:
    httpx.post(f"{sim}/admin/faults", json={"reject_next": 1, "reject_reason": "photo_check_failed"})
    reply = client.submit(notice("N-1"))
    assert reply.status == "rejected" and reply.reasons == ("photo_check_failed",)
    assert reply.rejected_records == dict.fromkeys(records(3), "photo_check_failed")
    assert client.submit(notice("N-1")) == reply  # a duplicate gets the stored answer, not a fresh judgement
    assert client.submit(notice("N-1b")).status == "accepted"  # the fault is used up: the same records now pass


@contextmanager
def signed_sim(tmp_path: Path) -> Iterator[tuple[str, NoticeSigner]]:
    signer = NoticeSigner.from_file(tmp_path / "server-notice.key")
    with exam_sim(None, envelope.public_key_from_pem(signer.public_pem)) as url:
        yield url, signer


def test_notices_signed_by_the_server_are_checked(tmp_path: Path) -> None:
    with signed_sim(tmp_path) as (url, signer):
        assert (tmp_path / "server-notice.key").stat().st_mode & 0o777 == 0o600
        with ExamClient(url) as unsigned, pytest.raises(ExamRefused, match="missing_signature"):
            unsigned.submit(notice("N-unsigned"))
        impostor = NoticeSigner.from_file(tmp_path / "other.key")
        with ExamClient(url, signer=impostor) as forged, pytest.raises(ExamRefused, match="bad_signature"):
            forged.submit(notice("N-forged"))
        # signed, then altered on the way: two more minutes than the server signed for
        body = signer.signed(notice("N-altered").to_json())
        body["valid_minutes"] += 2
        answer = httpx.post(f"{url}/api/v1/stage-reviews", json=body)
        assert answer.status_code == 422 and "bad_signature" in answer.json()["reasons"]
        with ExamClient(url, signer=signer) as client:
            assert client.submit(notice("N-1")).status == "accepted"
            assert client.submit(notice("N-1")).status == "accepted"  # Ed25519 is deterministic: a resend is equal
        stored = httpx.get(f"{url}/api/v1/stage-reviews").json()
        assert [n["notice_id"] for n in stored] == ["N-1"]
        key = envelope.public_key_from_pem(signer.public_pem)
        kept = envelope.parse(stored[0]["notice"]["signature"], "jiapei-stage-review+jws")  # the exam side keeps it
        envelope.verify(kept, key)
        assert kept.payload == notice("N-1").to_json()
        verify_notice(signer.signed(notice("N-2").to_json()), key)
        with pytest.raises(ValueError, match="differs"):
            verify_notice({**signer.signed(notice("N-2").to_json()), "part": 3}, key)


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    NoticeSigner.from_file(tmp_path / "k.key")
    (tmp_path / "k.key").chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        NoticeSigner.from_file(tmp_path / "k.key")


def test_injected_faults_then_success(sim: str, client: ExamClient) -> None:
    assert httpx.post(f"{sim}/admin/faults", json={"fail_next": 2}).status_code == 200
    for _ in range(2):
        with pytest.raises(ExamUnavailable, match="503"):
            client.submit(notice())
    assert httpx.get(f"{sim}/admin/faults").json()["fail_next"] == 0
    assert client.submit(notice()).status == "accepted"
    assert len(httpx.get(f"{sim}/api/v1/stage-reviews").json()) == 1


def test_a_lost_answer_is_retried_safely(sim: str) -> None:
    """The exam side stores the notice but the answer comes too late: the retry gets the same answer, one entry."""
    httpx.post(f"{sim}/admin/faults", json={"delay_next": 1, "delay_seconds": 1.0})
    with ExamClient(sim, timeout=0.2) as impatient, pytest.raises(ExamUnavailable, match="timed out"):
        impatient.submit(notice())
    wait_for(lambda: len(httpx.get(f"{sim}/api/v1/stage-reviews").json()) == 1, what="the delayed notice")
    with ExamClient(sim) as client:
        assert client.submit(notice()).status == "accepted"
    assert len(httpx.get(f"{sim}/api/v1/stage-reviews").json()) == 1


def test_unreachable_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        with ExamClient(f"http://127.0.0.1:{port}", timeout=1.0) as client, pytest.raises(ExamUnavailable):
            client.submit(notice())


def test_state_survives_restart(tmp_path: Path) -> None:
    state = tmp_path / "exam"
    with exam_sim(state) as url, ExamClient(url) as client:
        assert client.submit(notice()).status == "accepted"
        assert client.submit(notice("N-empty", recs=[])).status == "rejected"
    with exam_sim(state) as url, ExamClient(url) as client:
        assert httpx.get(f"{url}/api/v1/eligibility/{STUDENT}").json()["parts_accepted"] == [2]
        assert client.submit(notice()) == ExamReply("accepted", ())
        assert [n["notice_id"] for n in httpx.get(f"{url}/api/v1/stage-reviews").json()] == ["N-1", "N-empty"]
        with pytest.raises(ExamRefused):
            client.submit(notice(recs=records(2)))


def test_openapi_docs(sim: str) -> None:
    assert httpx.get(f"{sim}/docs").status_code == 200
    paths = httpx.get(f"{sim}/openapi.json").json()["paths"]
    assert {"/api/v1/stage-reviews", "/api/v1/eligibility/{student}", "/admin/faults"} <= set(paths)


def test_runs_as_a_process_with_faults_from_env(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JIAPEI_EXAM_FAIL_NEXT": "1"}
    cmd = [sys.executable, "-m", "simulators.exam", "--port", str(port), "--state-dir", str(tmp_path / "exam")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            assert proc.poll() is None, "simulator process exited"
            return False

    try:
        wait_for(up, what="the simulator process")
        with ExamClient(url) as client:
            with pytest.raises(ExamUnavailable):
                client.submit(notice())
            assert client.submit(notice()).status == "accepted"
        assert (tmp_path / "exam" / "exam.sqlite3").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=STARTUP_TIMEOUT)


def test_next_retry_delay_is_capped_exponential() -> None:
    delays = [next_retry_delay(a) for a in range(20)]
    assert delays[0] == RETRY_BASE_SECONDS
    assert all(b >= a for a, b in zip(delays, delays[1:], strict=False))
    assert delays[1] == 2 * delays[0]
    assert max(delays) == RETRY_MAX_SECONDS == next_retry_delay(10_000)
    with pytest.raises(ValueError):
        next_retry_delay(-1)


def test_digest_is_of_the_sorted_records() -> None:
    recs = records(3)
    assert digest_of(recs) == digest_of(list(reversed(recs))) == StageReviewNotice.digest_of(recs)
    assert notice(recs=list(reversed(recs))).records == tuple(recs)


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        (httpx.Response(200, json={"notice_id": "other", "status": "accepted", "reasons": []}), ExamUnavailable,
         "malformed"),
        (httpx.Response(200, text="<html>proxy</html>"), ExamUnavailable, "unreadable"),
        (httpx.Response(429), ExamUnavailable, "429"),
        (httpx.Response(400, json={"detail": "nope"}), ExamRefused, "nope"),
        (httpx.Response(404), ExamRefused, "http_404"),
        (httpx.ConnectError("refused"), ExamUnavailable, "unreachable"),
        (httpx.ReadTimeout("slow"), ExamUnavailable, "timed out"),
    ],
)  # fmt: skip
def test_client_maps_answers_and_transport_errors(
    answer: httpx.Response | Exception, error: type[Exception], message: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        return answer

    with ExamClient("http://exam.test", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(error, match=message):
            client.submit(notice())
