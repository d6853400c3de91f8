"""The service: ``headwater run`` under a terminal, systemd, or a test."""

from headwater.daemon._notify import Notifier
from headwater.daemon._service import Daemon, DaemonSettings, run_daemon

__all__ = ["Daemon", "DaemonSettings", "Notifier", "run_daemon"]
