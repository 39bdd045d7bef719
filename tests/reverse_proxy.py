"""deploy/nginx/assay.conf run by a real nginx on loopback, in front of an upstream of the test's.

The file is used as shipped, with only what a site replaces swapped for the test's own: the
listening addresses (free ports on 127.0.0.1), the upstream's port, a throwaway self-signed
certificate and a password file with one user. nginx checks it (``nginx -t``) and serves it
under its own prefix directory; the context stops it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from deploy.stack import free_port, port_open, wait_until

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "deploy" / "nginx" / "assay.conf"
USER = "alice"
PASSWORD = "correct horse battery staple"


def missing() -> str | None:
    """Why the proxy cannot run here, or ``None``."""
    if shutil.which("nginx") is None:
        return "nginx is not installed (apt-get install nginx)"
    if shutil.which("openssl") is None:
        return "openssl is not installed (for the test's certificate)"
    return None


@dataclass
class Proxy:
    https_port: int
    http_port: int
    tls: ssl.SSLContext  # trusts the test's certificate
    check_output: str  # what ``nginx -t`` said
    root: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"


def _password_file(path: Path) -> None:
    salt = os.urandom(8)
    digest = hashlib.sha1(PASSWORD.encode() + salt).digest()
    path.write_text(f"{USER}:{{SSHA}}{base64.b64encode(digest + salt).decode()}\n")


def _certificate(root: Path) -> tuple[Path, Path]:
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def site_config(upstream_port: int, https_port: int, http_port: int, root: Path) -> str:
    """deploy/nginx/assay.conf with the site's values replaced by the test's."""
    cert, key = _certificate(root)
    _password_file(root / "htpasswd")
    replacements = {
        "server 127.0.0.1:3000;": f"server 127.0.0.1:{upstream_port};",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen [::]:80;": "",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
        "listen [::]:443 ssl http2;": "",
        "/etc/ssl/assay/fullchain.pem": str(cert),
        "/etc/ssl/assay/privkey.pem": str(key),
        "/etc/nginx/assay.htpasswd": str(root / "htpasswd"),
    }
    text = CONFIG.read_text()
    for old, new in replacements.items():
        assert old in text, f"{CONFIG.name} no longer has {old!r}: update {Path(__file__).name}"
        text = text.replace(old, new)
    return text


@contextmanager
def reverse_proxy(root: Path, upstream_port: int) -> Iterator[Proxy]:
    """nginx with deploy/nginx/assay.conf in front of 127.0.0.1:``upstream_port``."""
    root.mkdir(parents=True, exist_ok=True)
    https_port, http_port = free_port(), free_port()
    (root / "assay.conf").write_text(site_config(upstream_port, https_port, http_port, root))
    temp = "\n".join(
        f"  {kind}_temp_path {root / kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    (root / "nginx.conf").write_text(
        # As root, the workers would run as nobody, who cannot read the test's files.
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"worker_processes 1;\npid {root / 'nginx.pid'};\n"
        + f"error_log {root / 'error.log'} info;\n"
        + "events { worker_connections 64; }\n"
        + f"http {{\n  access_log {root / 'access.log'};\n{temp}\n"
        + f"  uwsgi_temp_path {root / 'uwsgi'};\n  scgi_temp_path {root / 'scgi'};\n"
        + f"  include {root / 'assay.conf'};\n}}\n"
    )
    command = [
        "nginx",
        "-p",
        str(root),
        "-e",
        str(root / "error.log"),
        "-c",
        str(root / "nginx.conf"),
    ]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, f"nginx -t refused the configuration:\n{checked.stderr}"
    with open(root / "nginx.out", "wb") as out:
        process = subprocess.Popen(
            [*command, "-g", "daemon off;"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # master and workers: one group, stopped as one
        )
    try:
        wait_until("nginx", lambda: port_open(https_port), 30, root / "error.log")
        tls = ssl.create_default_context(cafile=str(root / "cert.pem"))
        yield Proxy(https_port, http_port, tls, checked.stderr, root)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # nginx's fast shutdown, master and workers
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
