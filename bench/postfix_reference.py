"""A throwaway Postfix instance that relays everything to a sink: the reference MTA the
throughput benchmark compares mxgate with (smtpd -> durable queue -> smtp -> smtp-sink).

Needs root and Debian's postfix package; it lists its config directory in
/etc/postfix/main.cf `alternate_config_directories` (Postfix refuses unknown directories) and
removes everything else it created when done.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from scratch import scratch

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = reference.bench.local
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
local_recipient_maps =
alias_maps =
relayhost = [127.0.0.1]:{sink_port}
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
smtp_tls_security_level = none
smtpd_tls_security_level = none
default_process_limit = 100
smtp_destination_concurrency_limit = 20
delay_logging_resolution_limit = 6
"""

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
smtp      unix  - - n -  - smtp
relay     unix  - - n -  - smtp
showq     unix  n - n -  - showq
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def _run(*args: str) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@contextlib.contextmanager
def postfix_relay(port: int, sink_port: int) -> Iterator[Path]:
    """Start Postfix on 127.0.0.1:port relaying to the sink; yields its maillog path."""
    if shutil.which("postfix") is None and not Path("/usr/sbin/postfix").exists():
        raise RuntimeError("postfix is not installed (make bench installs Debian's postfix)")
    with scratch("mxgate-postfix-") as root:
        yield from _running(root, port, sink_port)


def _running(root: Path, port: int, sink_port: int) -> Iterator[Path]:
    root.chmod(0o755)
    config = root / "etc"
    config.mkdir()
    (config / "main.cf").write_text(MAIN_CF.format(root=root, sink_port=sink_port))
    (config / "master.cf").write_text(MASTER_CF.format(port=port))
    for directory in ("queue", "data"):
        (root / directory).mkdir()
    shutil.chown(root / "data", "postfix")
    system_main = Path("/etc/postfix/main.cf")
    created = not system_main.exists()  # Debian's "No configuration" install has none
    if created:
        system_main.touch()
    _run("postconf", "-c", "/etc/postfix", "-e", f"alternate_config_directories = {config}")
    try:
        _run("postfix", "-c", str(config), "post-install", "create-missing")
        _run("postfix", "-c", str(config), "start")
        time.sleep(1.0)
        yield root / "maillog"
    finally:
        subprocess.run(
            ["postfix", "-c", str(config), "stop"],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        if created:
            system_main.unlink(missing_ok=True)
        else:
            subprocess.run(
                ["postconf", "-c", "/etc/postfix", "-X", "alternate_config_directories"],
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )


def relayed(maillog: Path) -> int:
    """Messages Postfix handed to the sink so far."""
    try:
        return maillog.read_text(errors="replace").count("status=sent")
    except FileNotFoundError:
        return 0
