"""``pkiq submit`` and ``pkiq jobs`` in-process (no worker: the embedded broker just holds
the messages), on both databases."""

import json

from .conftest import make_csr
from .test_cli import assert_one_line_error


def test_submit_approve_reject_retry(pkiq, tmp_path):
    assert pkiq("ca", "create", "R", "--subject", "/CN=R", "--key-type", "ec-p256",
                "--approval", "manual").exit_code == 0
    files = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.pem"
        path.write_bytes(make_csr(f"{name}.example.com"))
        files.append(path)
    out = pkiq("submit", *files, "--ca", "R", "--node", "expe1", "--requester", "alice",
               "--json")
    assert out.exit_code == 0, out.stderr
    rows = json.loads(out.output)
    assert [r["state"] for r in rows] == ["awaiting_approval"] * 2
    assert rows[0]["node"] == "expe1" and rows[0]["requester"] == "alice"
    waiting = json.loads(pkiq("jobs", "list", "--state", "awaiting_approval", "--json").output)
    assert sorted(j["id"] for j in waiting) == sorted(r["id"] for r in rows)

    approved = pkiq("jobs", "approve", rows[0]["id"], "--by", "bob", "--json")
    assert json.loads(approved.output)[0]["state"] == "queued"
    messages = pkiq.app.settings.queue_dir / "messages"
    assert len(list(messages.iterdir())) == 1  # announced to the (embedded) broker
    rejected = pkiq("jobs", "reject", rows[1]["id"], "--reason", "unknown host", "--json")
    assert json.loads(rejected.output)[0]["error"] == "unknown host"
    shown = json.loads(pkiq("jobs", "show", rows[1]["id"], "--json").output)
    assert shown["state"] == "rejected" and shown["decided_by"]

    assert_one_line_error(pkiq("jobs", "approve", rows[1]["id"]), 7, "not awaiting approval")
    assert_one_line_error(pkiq("jobs", "retry", rows[0]["id"]), 7, "only failed jobs")
    assert_one_line_error(pkiq("jobs", "show", 424242), 5, "no signing job")

    again = json.loads(pkiq("submit", files[0], "--ca", "R", "--json").output)
    assert again[0]["id"] == rows[0]["id"] and again[0]["new"] is False


def test_submit_reports_each_bad_file_and_exits_9(pkiq, tmp_path):
    assert pkiq("ca", "create", "R", "--subject", "/CN=R", "--key-type", "ec-p256").exit_code == 0
    good = tmp_path / "good.pem"
    good.write_bytes(make_csr())
    bad = tmp_path / "bad.pem"
    bad.write_bytes(b"not a request")
    result = pkiq("submit", good, bad, "--ca", "R")
    assert result.exit_code == 9
    assert "bad.pem: job - refused not a certificate request" in result.output
    assert "good.pem: job 1 queued" in result.output
    assert "2 file(s): 1 queued, 1 refused" in result.stderr
    assert_one_line_error(pkiq("submit", good, "--ca", "Nope"), 5, "no CA named 'Nope'")
