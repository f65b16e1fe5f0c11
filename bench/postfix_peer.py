"""The peer a dealer would pick instead of the gateway: Postfix relaying through OpenDKIM.

``PostfixPeer`` sets up and runs one private Postfix instance (its own configuration,
queue and data directories under the run's work directory, started with ``postfix -c``)
and one OpenDKIM milter on a unix socket, as a relay that the benchmark's client drives
exactly as it drives the gateway: EHLO, STARTTLS (a self-signed P-256 certificate, like the
gateway's), EHLO, AUTH PLAIN (Cyrus SASL against a sasldb of its own), then MAIL, RCPT,
DATA. Every message is signed RSA-2048 (relaxed/relaxed) by OpenDKIM with the same key
and identity the gateway signs with, queued by Postfix (which fsyncs its queue files
before the 250, as the gateway commits before its 250) and relayed to the sink.

Nothing of the system's Postfix or OpenDKIM is used or touched: no system service is
started, ``/etc/postfix/main.cf`` is not read (the instance has its own directory, and
Debian's Postfix reads Cyrus SASL settings from ``<config>/sasl/smtpd.conf``). Postfix
must be started as root; ``bench/setup.sh`` installs the packages. Postfix logs to
``<work>/postfix/maillog``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

HOSTNAME = "relay.bench.test"
TOOLS = ("postfix", "postconf", "opendkim", "saslpasswd2")


def unavailable() -> str | None:
    """Why the Postfix peer cannot run here, or ``None``."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (run bench/setup.sh as root)"
    if os.geteuid() != 0:
        return "Postfix must be started as root"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "no postfix user (run bench/setup.sh)"
    return None


def _run(argv: list[str], stdin: str | None = None) -> None:
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")


class PostfixPeer:
    """One private Postfix + OpenDKIM relay on ``port``, relaying to ``sink_port``."""

    def __init__(
        self,
        work: Path,
        port: int,
        sink_port: int,
        *,
        username: str,
        password: str,
        domain: str,
        selector: str,
        key_file: Path,
        cert_file: Path,
        cert_key_file: Path,
    ) -> None:
        self.dir = work / "postfix"
        self.conf = self.dir / "conf"
        self.port = port
        self.sink_port = sink_port
        self.username = username
        self.password = password
        self.domain = domain
        self.selector = selector
        self.key_file = key_file
        self.cert_file = cert_file
        self.cert_key_file = cert_key_file
        self.maillog = self.dir / "maillog"
        self.milter_socket = self.dir / "opendkim.sock"

    # -- configuration -------------------------------------------------------------------

    def opendkim_argv(self) -> list[str]:
        """Write OpenDKIM's configuration; the command that runs it in the foreground."""
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "opendkim.conf"
        conf.write_text(
            "\n".join(
                [
                    "Syslog no",
                    "Mode s",
                    f"Domain {self.domain}",
                    f"Selector {self.selector}",
                    f"KeyFile {self.key_file}",
                    "RequireSafeKeys false",
                    "Canonicalization relaxed/relaxed",
                    "SignatureAlgorithm rsa-sha256",
                    f"Socket local:{self.milter_socket}",
                    "UMask 000",
                    "",
                ]
            )
        )
        return ["opendkim", "-f", "-x", str(conf)]

    def wait_for_milter(self, timeout: float = 20.0) -> None:
        """Wait until OpenDKIM's socket exists."""
        deadline = time.monotonic() + timeout
        while not self.milter_socket.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"opendkim did not create {self.milter_socket}")
            time.sleep(0.05)

    def configure(self) -> None:
        """Write main.cf, master.cf, the SASL database and its settings."""
        spool, data, sasl = self.dir / "spool", self.dir / "data", self.conf / "sasl"
        for directory in (self.conf, spool, data, sasl):
            directory.mkdir(parents=True, exist_ok=True)
        # Postfix's daemons run as the postfix user and read these directories.
        for parent in (self.dir.parent, self.dir):
            parent.chmod(0o755)
        shutil.chown(data, "postfix")
        shutil.copy("/etc/postfix/master.cf", self.conf / "master.cf")
        sasldb = self.dir / "sasldb2"
        _run(
            ["saslpasswd2", "-p", "-c", "-f", str(sasldb), "-u", HOSTNAME, self.username],
            stdin=self.password,
        )
        shutil.chown(sasldb, "postfix")
        sasldb.chmod(0o600)
        (sasl / "smtpd.conf").write_text(
            f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\n"
            f"sasldb_path: {sasldb}\n"
        )
        (self.conf / "main.cf").write_text(
            "\n".join(
                [
                    "compatibility_level = 3.6",
                    f"queue_directory = {spool}",
                    f"data_directory = {data}",
                    f"maillog_file = {self.maillog}",
                    f"maillog_file_prefixes = {self.dir}",
                    "mail_owner = postfix",
                    "setgid_group = postdrop",
                    f"myhostname = {HOSTNAME}",
                    "inet_interfaces = 127.0.0.1",
                    "inet_protocols = ipv4",
                    "mynetworks = 127.0.0.0/8",
                    "mydestination =",
                    "local_recipient_maps =",
                    "alias_maps =",
                    "alias_database =",
                    f"relayhost = [127.0.0.1]:{self.sink_port}",
                    # The client is the gateway's: STARTTLS, then AUTH PLAIN, nothing in clear.
                    f"smtpd_tls_cert_file = {self.cert_file}",
                    f"smtpd_tls_key_file = {self.cert_key_file}",
                    "smtpd_tls_security_level = encrypt",
                    "smtpd_tls_auth_only = yes",
                    "smtpd_sasl_auth_enable = yes",
                    "smtpd_sasl_type = cyrus",
                    "smtpd_sasl_path = smtpd",
                    f"smtpd_sasl_local_domain = {HOSTNAME}",
                    "smtpd_relay_restrictions = permit_sasl_authenticated, reject",
                    # Every message through the milter; none without its signature.
                    f"smtpd_milters = unix:{self.milter_socket}",
                    "milter_default_action = tempfail",
                    "",
                ]
            )
        )
        postconf = ["postconf", "-c", str(self.conf)]
        _run([*postconf, "-M#", "smtp/inet"])  # no listener on port 25
        service = f"127.0.0.1:{self.port}"
        _run([*postconf, "-M", f"{service}/inet = {service} inet n - n - - smtpd"])
        _run([*postconf, "-F", "*/*/chroot = n"])

    # -- running -------------------------------------------------------------------------

    def start(self) -> None:
        """``postfix start`` (it daemonizes; ``master_pid`` finds the master)."""
        done = subprocess.run(
            ["postfix", "-c", str(self.conf), "start"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            tail = self.maillog.read_text(errors="replace")[-2000:] if self.maillog.exists() else ""
            raise RuntimeError(f"postfix start failed ({done.returncode}): {done.stderr}{tail}")

    def master_pid(self, timeout: float = 20.0) -> int:
        """The running master's pid."""
        pid_file = self.dir / "spool" / "pid" / "master.pid"
        deadline = time.monotonic() + timeout
        while True:
            try:
                return int(pid_file.read_text().strip())
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no {pid_file}") from None
                time.sleep(0.05)

    def queue_empty(self) -> bool:
        """Whether Postfix has nothing left to deliver."""
        done = subprocess.run(
            ["postqueue", "-c", str(self.conf), "-p"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        return "Mail queue is empty" in done.stdout

    def stop(self) -> None:
        """``postfix stop``, then make sure the master is gone."""
        try:
            pid = self.master_pid(timeout=0.1)
        except RuntimeError:
            pid = 0
        subprocess.run(
            ["postfix", "-c", str(self.conf), "stop"],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while pid and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
