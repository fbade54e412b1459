"""The lab panel: the servers of a lab, a start/stop switch each, and client settings.

Role
    What an instructor projects at the start of a lab, and what chapter 7 uses to take a
    server down (``lab.stop_server``) and bring it back (``lab.start_server``, on the
    same port) while mail is on its way. Three parts:

    * **Servers**: name, role, protocol, port, and a switch (CSS ``mk-server-toggle``,
      plus ``mk-server-<name>`` with dots as dashes, e.g. ``mk-server-mx-south-test``).
    * **Accounts**: address and password of every account of the lab.
    * **Settings for a real client**: for the chosen account (``mk-settings-account``),
      what Thunderbird or mutt needs (host, port, security, user name) and a muttrc.
      The host is 127.0.0.1 with the lab's port: the lab's names (``imap.north.test``)
      live in the lab's own DNS only, which a desktop client does not ask.

The logic is plain methods (:meth:`LabPanel.set_running`, :meth:`LabPanel.refresh`,
:meth:`LabPanel.settings_text`); the ipywidgets are a view over them.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ._base import WidgetBase, css

if TYPE_CHECKING:
    from ..lab import Lab

__all__ = ["LabPanel"]

_TABLE_STYLE = (
    "<style>.mk-labpanel table{border-collapse:collapse;font-size:90%}"
    ".mk-labpanel th,.mk-labpanel td{padding:2px 8px;text-align:left;"
    "border-bottom:1px solid #ddd}.mk-labpanel code{font-size:95%}</style>"
)


def server_class(name: str) -> str:
    """The CSS class of a server's switch: ``mx.south.test`` → ``mk-server-mx-south-test``."""
    return "mk-server-" + name.replace(".", "-")


class LabPanel(WidgetBase):
    """Servers with start/stop switches, accounts, and real-client settings for a lab."""

    def __init__(self, lab: Lab) -> None:
        super().__init__()
        self.lab = lab
        self.toggles: dict[str, widgets.ToggleButton] = {}
        self.ports: dict[str, widgets.HTML] = {}
        rows = []
        for row in lab.servers.itertuples():
            toggle = css(
                widgets.ToggleButton(
                    value=bool(row.running),
                    layout=widgets.Layout(width="110px"),
                    tooltip=f"start or stop {row.name}",
                ),
                "mk-server-toggle",
                server_class(row.name),
            )
            toggle.observe(self.guard(self._on_toggle(row.name), f"{row.name}"), names="value")
            self.toggles[row.name] = toggle
            label = widgets.HTML(self._server_label(row.name, row.role, row.protocol, row.port))
            self.ports[row.name] = label
            rows.append(widgets.HBox([toggle, label]))
        self._paint_toggles()
        self.accounts = widgets.HTML(self._accounts_html())
        addresses = list(lab.accounts["address"])
        self.account = css(
            widgets.Dropdown(options=addresses, value=addresses[0], description="Account"),
            "mk-settings-account",
        )
        self.settings = css(widgets.HTML(), "mk-settings")
        self.account.observe(self.guard(lambda change: self._show_settings()), names="value")
        self._show_settings()
        self.refresh_button = css(
            widgets.Button(description="Refresh", icon="refresh"), "mk-labpanel-refresh"
        )
        self.refresh_button.on_click(self.guard(lambda _: self.refresh(), "refresh"))
        self.widget = css(
            widgets.VBox(
                [
                    widgets.HTML(_TABLE_STYLE + "<b>Servers</b> (switch one off to see mail wait)"),
                    *rows,
                    self.refresh_button,
                    widgets.HTML("<b>Accounts</b>"),
                    self.accounts,
                    widgets.HTML("<b>Settings for a real mail client</b>"),
                    self.account,
                    self.settings,
                    self.errors.widget,
                ]
            ),
            "mk-labpanel",
        )

    # -- logic ------------------------------------------------------------------------

    def set_running(self, name: str, running: bool) -> None:
        """Start or stop server ``name`` (the switch follows)."""
        if running:
            self.lab.start_server(name)
        else:
            self.lab.stop_server(name)
        self.refresh()

    def refresh(self) -> None:
        """Read the servers' state again (someone may have used ``lab.stop_server``)."""
        for row in self.lab.servers.itertuples():
            toggle = self.toggles.get(row.name)
            if toggle is not None and toggle.value != bool(row.running):
                self._setting = True
                try:
                    toggle.value = bool(row.running)
                finally:
                    self._setting = False
        self._paint_toggles()
        self.errors.clear()

    def settings_text(self, address: str) -> dict[str, Any]:
        """What a desktop client needs for ``address``: incoming (IMAP, POP3), outgoing (SMTP)."""
        domain = address.rpartition("@")[2]
        password = self.lab.account(address).password

        def port(role: str) -> int:
            return int(self.lab.port(f"{role}.{domain}"))

        return {
            "user": address,
            "password": password,
            "imap": {"host": "127.0.0.1", "port": port("imap"), "security": "STARTTLS or none"},
            "pop3": {"host": "127.0.0.1", "port": port("pop3"), "security": "STLS or none"},
            "smtp": {
                "host": "127.0.0.1",
                "port": port("msa"),
                "security": "STARTTLS or none",
                "auth": "PLAIN or LOGIN",
            },
            "ca_file": str(self.lab.ca_file),
            "muttrc": "\n".join(
                [
                    f'set folder="imap://{address.replace("@", "%40")}@127.0.0.1:{port("imap")}/"',
                    'set spoolfile="+INBOX"',
                    f'set imap_pass="{password}"',
                    f'set smtp_url="smtp://{address.replace("@", "%40")}@127.0.0.1:{port("msa")}/"',
                    f'set smtp_pass="{password}"',
                    f'set from="{address}"',
                    f'set ssl_ca_certificates_file="{self.lab.ca_file}"',
                    "set ssl_starttls=yes",
                ]
            ),
        }

    # -- view -----------------------------------------------------------------------------

    _setting = False  # True while refresh() moves a switch: not a user's click

    def _on_toggle(self, name: str):
        def changed(change: dict) -> None:
            if self._setting:
                return
            try:
                self.set_running(name, bool(change["new"]))
            except Exception:
                self.refresh()  # put the switch back where the server really is
                raise

        return changed

    def _paint_toggles(self) -> None:
        for toggle in self.toggles.values():
            toggle.description = "running" if toggle.value else "stopped"
            toggle.icon = "play" if toggle.value else "stop"
            toggle.button_style = "success" if toggle.value else "danger"

    @staticmethod
    def _server_label(name: str, role: str, protocol: str, port: int) -> str:
        return (
            f"<code>{html.escape(name)}</code> &nbsp; {html.escape(role)} "
            f"({html.escape(protocol)}) on 127.0.0.1:<b>{int(port)}</b>"
        )

    def _accounts_html(self) -> str:
        rows = "".join(
            f"<tr><td><code>{html.escape(r.address)}</code></td>"
            f"<td><code>{html.escape(r.password)}</code></td></tr>"
            for r in self.lab.accounts.itertuples()
        )
        return f"<table><tr><th>address (the login)</th><th>password</th></tr>{rows}</table>"

    def _show_settings(self) -> None:
        s = self.settings_text(self.account.value)
        cells = "".join(
            f"<tr><td>{label}</td><td>{html.escape(s[key]['host'])}</td>"
            f"<td><b>{s[key]['port']}</b></td><td>{html.escape(s[key]['security'])}</td></tr>"
            for key, label in (
                ("imap", "Incoming, IMAP"),
                ("pop3", "Incoming, POP3"),
                ("smtp", "Outgoing, SMTP (submission)"),
            )
        )
        self.settings.value = (
            f"<table><tr><th>server</th><th>host</th><th>port</th><th>security</th></tr>{cells}"
            f"</table><p>User name <code>{html.escape(s['user'])}</code>, password "
            f"<code>{html.escape(s['password'])}</code>; to check certificates, trust the lab "
            f"CA <code>{html.escape(s['ca_file'])}</code>.</p>"
            f"<details><summary>muttrc</summary><pre>{html.escape(s['muttrc'])}</pre></details>"
        )
