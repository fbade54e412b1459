"""Third-party clients against the lab: curl and swaks (Debian packages, see .ci/run)."""

from __future__ import annotations

import pytest

from .conftest import need, run
from .test_smtp_lab import ALICE, CAROL, password, wait_for_subject

pytestmark = pytest.mark.clients


def curl_submit(tmp_path, url: str, message: bytes, user: str, *options: str):
    """``curl smtp://...`` sending ``message`` from alice to carol, logged in as ``user``."""
    eml = tmp_path / "msg.eml"
    eml.write_bytes(message)
    return run(
        [need("curl"), "-sS", *options, url, "--mail-from", ALICE, "--mail-rcpt", CAROL]
        + ["--user", user, "-T", str(eml)]
    )


def test_curl_submits_through_the_msa(lab, tmp_path):
    """curl smtp:// with AUTH submits a message that reaches carol at south."""
    port = lab.port("msa.north.test")
    result = curl_submit(
        tmp_path,
        f"smtp://127.0.0.1:{port}/client.test",
        b"From: alice@north.test\r\nTo: carol@south.test\r\nSubject: sent by curl\r\n\r\n"
        b"Hello from curl.\r\n.leading dot line\r\n",
        f"{ALICE}:{password(lab, ALICE)}",
    )
    assert result.returncode == 0, result.stderr
    stored = wait_for_subject(lab, CAROL, "sent by curl")
    assert ".leading dot line" in stored.get_payload()
    rows = lab.transcript(server="msa.north.test")
    assert "EHLO client.test" in rows["line"].tolist()


def test_curl_with_a_wrong_password_fails(lab, tmp_path):
    """curl reports a login failure (exit 67) when the MSA answers 535."""
    port = lab.port("msa.north.test")
    result = curl_submit(
        tmp_path, f"smtp://127.0.0.1:{port}", b"Subject: no\r\n\r\nno\r\n", f"{ALICE}:wrong"
    )
    assert result.returncode == 67, (result.returncode, result.stderr)


def test_curl_starttls_with_the_lab_ca(lab, tmp_path):
    """curl --ssl-reqd upgrades with STARTTLS, verifies the lab CA and submits."""
    port = lab.port("msa.north.test")
    result = curl_submit(
        tmp_path,
        f"smtp://msa.north.test:{port}",
        b"Subject: curl over tls\r\n\r\nsecret\r\n",
        f"{ALICE}:{password(lab, ALICE)}",
        "--ssl-reqd",
        "--cacert",
        str(lab.ca_file),
        "--resolve",
        f"msa.north.test:{port}:127.0.0.1",
    )
    assert result.returncode == 0, result.stderr
    stored = wait_for_subject(lab, CAROL, "curl over tls")
    assert "ESMTPSA" in stored.get_all("Received")[1]


def test_swaks_auth_plain_and_login(lab):
    """swaks submits with AUTH PLAIN and with AUTH LOGIN, and both messages arrive."""
    swaks = need("swaks")
    port = lab.port("msa.north.test")
    for mechanism in ("PLAIN", "LOGIN"):
        result = run(
            [
                swaks,
                "--server",
                "127.0.0.1",
                "--port",
                str(port),
                "--from",
                ALICE,
                "--to",
                CAROL,
                "--auth",
                mechanism,
                "--auth-user",
                ALICE,
                "--auth-password",
                password(lab, ALICE),
                "--header",
                f"Subject: swaks {mechanism}",
                "--helo",
                "swaks.test",
                "--timeout",
                "20",
            ]
        )
        assert result.returncode == 0, result.stdout + result.stderr
        wait_for_subject(lab, CAROL, f"swaks {mechanism}")


def test_swaks_is_refused_as_an_open_relay(lab):
    """swaks straight to south's MX for a domain that is not south's fails with 550."""
    swaks = need("swaks")
    port = lab.port("mx.south.test")
    result = run(
        [
            swaks,
            "--server",
            "127.0.0.1",
            "--port",
            str(port),
            "--from",
            "eve@evil.test",
            "--to",
            "victim@elsewhere.test",
            "--helo",
            "evil.test",
            "--timeout",
            "20",
        ]
    )
    assert result.returncode != 0
    assert "550 5.7.1" in result.stdout


def test_swaks_pipelining_to_the_mx(lab):
    """swaks with --pipeline delivers straight to the MX (PIPELINING, RFC 2920)."""
    swaks = need("swaks")
    port = lab.port("mx.south.test")
    result = run(
        [
            swaks,
            "--server",
            "127.0.0.1",
            "--port",
            str(port),
            "--from",
            "eve@elsewhere.test",
            "--to",
            CAROL,
            "--helo",
            "elsewhere.test",
            "--pipeline",
            "--header",
            "Subject: pipelined",
            "--timeout",
            "20",
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    wait_for_subject(lab, CAROL, "pipelined")
