"""mailkit-edu: learn how email really travels, on real servers on your own machine.

``lab = mailkit_edu.start_lab()`` starts a DNS server and, for two mail
providers (``north.test`` and ``south.test``), a submission server (MSA), an
inbound server (MX), a POP3 server and an IMAP server on 127.0.0.1.
``lab.servers``, ``lab.accounts`` and ``lab.transcript()`` are pandas
DataFrames; ``lab.stop()`` ends it all.

Layers (each imports only those before it): ``transcript``, ``config``,
``faults``, ``store``, ``tls`` know nothing of protocols; ``pop3`` is the POP3
protocol core and ``imapparse``, ``imapmessage``, ``imapmailboxes``, ``imap`` the
IMAP layers (no I/O); ``dnsserver``, ``relay``, ``smtp``, ``pop3server`` and
``imapserver`` are the servers; ``lab`` assembles them; ``cli`` runs a lab in a terminal.
"""

from __future__ import annotations

from .config import Account, Domain
from .lab import Lab, LabError, start_lab

__version__ = "0.1.0"

__all__ = ["Account", "Domain", "Lab", "LabError", "__version__", "start_lab"]
