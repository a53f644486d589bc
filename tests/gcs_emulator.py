"""Google Cloud Storage on loopback, for tests that read and write ``gs://`` for real.

:class:`GcsEmulator` starts ``gcp-storage-emulator`` (a pure-Python implementation of the GCS
JSON API, from PyPI: no Java or Go toolchain, installs from the lock like every other test
dependency) on 127.0.0.1, in memory, and a stand-in for the GCE metadata
server on 127.0.0.1 that hands out a token, as a Dataflow worker's metadata server does. Without
it, Beam's GCS client asks ``google.auth`` for default credentials, retries with back-off for about
25 s in every process, then connects anonymously; with it, every process (the launcher, each
Beam worker) gets credentials at once and sends them, and the emulator ignores them.

:attr:`GcsEmulator.env` is what a subprocess needs: ``STORAGE_EMULATOR_HOST`` (read by
``google-cloud-storage``, which Beam's ``gs://`` filesystem uses) and ``GCE_METADATA_HOST`` /
``GCE_METADATA_IP``.

TensorFlow's own GCS client (``tf.io.gfile``, ``tf.data``) has its endpoints compiled in
(``https://www.googleapis.com``, ``https://storage.googleapis.com``), but it goes through
``https_proxy`` and trusts ``CURL_CA_BUNDLE``. So the env also names :class:`_TlsFront`, a proxy
on 127.0.0.1 that accepts ``CONNECT`` to those two names only, terminates TLS with a certificate
from a CA made for the test (``cryptography``), and forwards each request to the emulator;
``GOOGLE_AUTH_TOKEN_FOR_TESTING`` gives TensorFlow its token. The proxy also works around one
emulator bug: an empty object uploaded as ``uploadType=media`` (TensorFlow's directory
markers) is sent as a multipart upload, which the emulator stores. See docs/scale.md.
"""

from __future__ import annotations

import datetime
import http.client
import json
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

LOOPBACK = '127.0.0.1'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class _MetadataHandler(BaseHTTPRequestHandler):
    """The few GCE metadata paths ``google.auth``'s compute-engine credentials read."""

    PROJECT = 'ddsp-test'
    ACCOUNT = 'worker@ddsp-test.iam.gserviceaccount.com'

    def do_GET(self):  # noqa: N802 - http.server's name
        path = self.path.split('?')[0].rstrip('/')
        sa = '/computeMetadata/v1/instance/service-accounts/default'
        bodies = {
            '': 'computeMetadata/',
            '/computeMetadata/v1/project/project-id': self.PROJECT,
            '/computeMetadata/v1/universe/universe-domain': 'googleapis.com',
            sa: json.dumps({'email': self.ACCOUNT, 'aliases': ['default'],
                            'scopes': ['https://www.googleapis.com/auth/cloud-platform']}),
            f'{sa}/email': self.ACCOUNT,
            f'{sa}/token': json.dumps({'access_token': 'loopback-test-token',
                                       'expires_in': 3600, 'token_type': 'Bearer'}),
        }
        if path not in bodies:
            self.send_error(404)
            return
        body = bodies[path].encode()
        self.send_response(200)
        self.send_header('Metadata-Flavor', 'Google')
        self.send_header('Content-Type', 'application/json' if body[:1] == b'{' else 'text/plain')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


#: The names TensorFlow's GCS client connects to (JSON API and media downloads).
TF_GCS_HOSTS = ('www.googleapis.com', 'storage.googleapis.com')


def _test_certificates(directory: Path, hosts: tuple[str, ...]) -> tuple[Path, Path, Path]:
    """A CA made for this test and a server certificate for ``hosts`` it signed:
    ``(ca.pem, server.pem, server.key)``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))

    def builder(subject, issuer, public_key):
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(valid[0]).not_valid_after(valid[1]))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'ddsp tests loopback CA')])
    ca = (builder(ca_name, ca_name, ca_key.public_key())
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    server = (builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]), ca_name,
                      key.public_key())
              .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]),
                             critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                             critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                  ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
    paths = (directory / 'ca.pem', directory / 'server.pem', directory / 'server.key')
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class _Forward(BaseHTTPRequestHandler):
    """One decrypted connection: each request forwarded to the emulator, its answer returned."""

    protocol_version = 'HTTP/1.1'
    upstream: tuple[str, int]

    def _body(self) -> bytes | None:
        if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b';')[0].strip() or b'0', 16)
                if size == 0:
                    while self.rfile.readline() not in (b'\r\n', b'\n', b''):
                        pass
                    return b''.join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get('Content-Length') or 0)
        if length:
            return self.rfile.read(length)
        return b'' if self.command in ('POST', 'PUT', 'PATCH') else None

    def _forward(self):
        body = self._body()
        path = self.path
        headers = {k: v for k, v in self.headers.items() if k.lower() not in (
            'transfer-encoding', 'expect', 'connection', 'proxy-connection', 'content-length',
            'host')}
        # The emulator's own address, so the links it records (mediaLink, upload sessions)
        # point at it for every client, not at the public name TensorFlow asked for.
        headers['Host'] = '{}:{}'.format(*self.upstream)
        url = urlsplit(path)
        query = parse_qs(url.query)
        if body == b'' and self.command == 'POST' and query.get('uploadType') == ['media']:
            # gcp-storage-emulator cannot store an empty media upload: send it as multipart.
            query['uploadType'] = ['multipart']
            boundary = 'ddsp-loopback-boundary'
            meta = json.dumps({'name': query['name'][0]})
            body = (f'--{boundary}\r\nContent-Type: application/json\r\n\r\n{meta}\r\n'
                    f'--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n\r\n'
                    f'--{boundary}--\r\n').encode()
            headers['Content-Type'] = f'multipart/related; boundary={boundary}'
            path = url.path + '?' + urlencode(query, doseq=True)
        if body is not None:
            headers['Content-Length'] = str(len(body))
        connection = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            connection.request(self.command, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        self.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() in ('transfer-encoding', 'connection', 'content-length'):
                continue
            if key.lower() == 'location':  # an upload session: TensorFlow goes on through here
                value = value.replace('http://{}:{}'.format(*self.upstream),
                                      f'https://{self.headers["Host"]}', 1)
            self.send_header(key, value)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward

    def log_message(self, *args):  # quiet
        pass


class _Connect(socketserver.StreamRequestHandler):
    """``CONNECT host:443`` for one of :data:`TF_GCS_HOSTS`: TLS with the test certificate, then
    plain HTTP requests on the decrypted stream (:class:`_Forward`)."""

    def handle(self):
        request = self.rfile.readline().decode('latin-1').split()
        while self.rfile.readline() not in (b'\r\n', b'\n', b''):
            pass
        if len(request) < 2 or request[0] != 'CONNECT' or \
                request[1].rsplit(':', 1)[0] not in TF_GCS_HOSTS:
            self.wfile.write(b'HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n')
            return
        self.wfile.write(b'HTTP/1.1 200 Connection established\r\n\r\n')
        self.wfile.flush()
        try:
            tls = self.server.tls.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError):
            return
        self.server.forward(tls, self.client_address, self.server)


class _TlsFront(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True

    def __init__(self, directory: Path, upstream_port: int):
        super().__init__((LOOPBACK, 0), _Connect)
        self.ca, cert, key = _test_certificates(directory, TF_GCS_HOSTS)
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(cert, key)
        self.forward = type('Forward', (_Forward,), {'upstream': (LOOPBACK, upstream_port)})


class GcsEmulator:
    """``with GcsEmulator(tmp_path, bucket='b') as gcs:`` ... ``gcs.env``, ``gcs.client()``."""

    def __init__(self, workdir: Path, bucket: str = 'ddsp-test-bucket', timeout_s: float = 60):
        """``workdir``: the emulator's log and the test CA's files."""
        self.workdir = Path(workdir)
        self.bucket = bucket
        self.timeout_s = timeout_s
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self._metadata: ThreadingHTTPServer | None = None
        self._front: _TlsFront | None = None

    @property
    def url(self) -> str:
        return f'http://{LOOPBACK}:{self.port}'

    @property
    def env(self) -> dict[str, str]:
        host = f'{LOOPBACK}:{self._metadata.server_address[1]}'
        proxy = f'http://{LOOPBACK}:{self._front.server_address[1]}'
        return {'STORAGE_EMULATOR_HOST': self.url, 'GCE_METADATA_HOST': host,
                'GCE_METADATA_IP': host, 'GOOGLE_CLOUD_PROJECT': _MetadataHandler.PROJECT,
                # TensorFlow's client (libcurl): through the TLS front, with the test CA
                'https_proxy': proxy, 'HTTPS_PROXY': proxy, 'no_proxy': f'{LOOPBACK},localhost',
                'NO_PROXY': f'{LOOPBACK},localhost', 'CURL_CA_BUNDLE': str(self._front.ca),
                'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'loopback-test-token',
                # an emulator error fails in seconds, not after TF's 10 retries with back-off
                'GCS_RETRY_CONFIG_MAX_RETRIES': '2'}

    def client(self):
        """A ``google.cloud.storage.Client`` on the emulator (for the test's own set-up)."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(project=_MetadataHandler.PROJECT,
                              credentials=AnonymousCredentials(),
                              client_options={'api_endpoint': self.url})

    def upload(self, local: Path, name: str) -> str:
        self.client().bucket(self.bucket).blob(name).upload_from_filename(str(local))
        return f'gs://{self.bucket}/{name}'

    def objects(self, prefix: str) -> dict[str, bytes]:
        """``{name relative to prefix: bytes}`` of every object under ``gs://bucket/prefix``
        (not TensorFlow's directory markers, the empty objects named ``.../``)."""
        blobs = self.client().list_blobs(self.bucket, prefix=prefix)
        return {b.name[len(prefix):].lstrip('/'): b.download_as_bytes() for b in blobs
                if not b.name.endswith('/')}

    def __enter__(self) -> GcsEmulator:
        self._metadata = ThreadingHTTPServer((LOOPBACK, 0), _MetadataHandler)
        threading.Thread(target=self._metadata.serve_forever, daemon=True).start()
        self.port = _free_port()
        self.log = (self.workdir / 'gcs-emulator.log').open('w')
        # In memory: on disk, the emulator maps objects to files, so a directory marker
        # ("eval/", which TensorFlow writes) and an object under it ("eval/a.json") collide.
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'gcp_storage_emulator', 'start', '--in-memory',
             '--host', LOOPBACK, '--port', str(self.port), '--default-bucket', self.bucket],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                with urllib.request.urlopen(f'{self.url}/storage/v1/b/{self.bucket}',
                                            timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError('the GCS emulator did not start: '
                                   + (self.workdir / 'gcs-emulator.log').read_text()[-2000:])
            time.sleep(0.2)
        self._front = _TlsFront(self.workdir, self.port)
        threading.Thread(target=self._front.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for server in (self._front, self._metadata):
            if server is not None:
                server.shutdown()
                server.server_close()
        if getattr(self, 'log', None):
            self.log.close()
