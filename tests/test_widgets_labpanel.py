"""The lab panel, headless: switches stop and start real servers; settings are true."""

from __future__ import annotations

import imaplib
import smtplib
import socket

import pytest

import mailkit_edu as mk
from mailkit_edu import widgets
from mailkit_edu.widgets.labpanel import LabPanel, server_class

from .conftest import FAST


@pytest.fixture(autouse=True)
def strict_widgets():
    widgets.strict(True)
    yield
    widgets.strict(False)


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_every_server_has_a_switch_with_a_stable_class(lab):
    panel = LabPanel(lab)
    assert set(panel.toggles) == set(lab.servers["name"])
    for name, toggle in panel.toggles.items():
        assert toggle.value is True and toggle.description == "running"
        assert {"mk-server-toggle", server_class(name)} <= set(toggle._dom_classes)
    assert server_class("mx.south.test") == "mk-server-mx-south-test"


def test_switching_a_server_off_closes_its_port_and_on_reopens_the_same_port():
    with mk.start_lab(**FAST) as lab:
        panel = LabPanel(lab)
        port = lab.port("mx.south.test")
        panel.toggles["mx.south.test"].value = False  # what a click does
        assert refused(port)
        assert not lab.servers.set_index("name").loc["mx.south.test", "running"]
        assert panel.toggles["mx.south.test"].description == "stopped"
        panel.toggles["mx.south.test"].value = True
        assert lab.port("mx.south.test") == port and not refused(port)
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            assert smtp.noop()[0] == 250


def test_refresh_follows_servers_stopped_elsewhere():
    with mk.start_lab(**FAST) as lab:
        panel = LabPanel(lab)
        lab.stop_server("imap.north.test")
        panel.refresh_button.click()
        assert panel.toggles["imap.north.test"].value is False
        assert panel.toggles["imap.north.test"].description == "stopped"
        assert lab.servers.set_index("name").loc["imap.north.test", "running"] == False  # noqa: E712
        lab.start_server("imap.north.test")
        panel.refresh()
        assert panel.toggles["imap.north.test"].value is True


def test_the_settings_let_a_real_client_log_in(lab):
    panel = LabPanel(lab)
    panel.account.value = "carol@south.test"
    settings = panel.settings_text("carol@south.test")
    assert str(settings["imap"]["port"]) in panel.settings.value
    assert "carol@south.test" in panel.settings.value
    imap = imaplib.IMAP4(settings["imap"]["host"], settings["imap"]["port"])
    assert imap.login(settings["user"], settings["password"])[0] == "OK"
    imap.logout()
    assert f":{settings['imap']['port']}/" in settings["muttrc"]
    assert all(a in panel.accounts.value for a in lab.accounts["address"])


def test_a_failed_switch_shows_the_error_and_puts_the_switch_back(lab, monkeypatch):
    panel = LabPanel(lab)

    def broken(name):
        raise mk.LabError("the lab is busy")

    monkeypatch.setattr(lab, "stop_server", broken)
    widgets.strict(False)
    panel.toggles["pop3.north.test"].value = False
    assert "the lab is busy" in panel.errors.text
    assert panel.toggles["pop3.north.test"].value is True  # the server is still running
    assert lab.servers.set_index("name").loc["pop3.north.test", "running"]
