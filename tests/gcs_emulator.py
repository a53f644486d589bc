"""Google Cloud Storage on loopback, for tests that read and write ``gs://`` for real.

:class:`GcsEmulator` starts ``gcp-storage-emulator`` (a pure-Python implementation of the GCS
JSON API, from PyPI: no Java or Go toolchain, installs from the lock like every other test
dependency) on 127.0.0.1 with a throw-away data directory, and a stand-in for the GCE metadata
server on 127.0.0.1 that hands out a token, as a Dataflow worker's metadata server does. Without
it, Beam's GCS client asks ``google.auth`` for default credentials, retries with back-off for about
25 s in every process, then connects anonymously; with it, every process (the launcher, each
Beam worker) gets credentials at once and sends them, and the emulator ignores them.

:attr:`GcsEmulator.env` is what a subprocess needs: ``STORAGE_EMULATOR_HOST`` (read by
``google-cloud-storage``, which Beam's ``gs://`` filesystem uses) and ``GCE_METADATA_HOST`` /
``GCE_METADATA_IP``. TensorFlow's own GCS client (``tf.io.gfile``) has its endpoint compiled in
and cannot be pointed here: see docs/scale.md for what that leaves unexercised.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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


class GcsEmulator:
    """``with GcsEmulator(tmp_path, bucket='b') as gcs:`` ... ``gcs.env``, ``gcs.client()``."""

    def __init__(self, workdir: Path, bucket: str = 'ddsp-test-bucket', timeout_s: float = 60):
        self.workdir = Path(workdir)
        self.bucket = bucket
        self.timeout_s = timeout_s
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self._metadata: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f'http://{LOOPBACK}:{self.port}'

    @property
    def env(self) -> dict[str, str]:
        host = f'{LOOPBACK}:{self._metadata.server_address[1]}'
        return {'STORAGE_EMULATOR_HOST': self.url, 'GCE_METADATA_HOST': host,
                'GCE_METADATA_IP': host, 'GOOGLE_CLOUD_PROJECT': _MetadataHandler.PROJECT}

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
        """``{name relative to prefix: bytes}`` of every object under ``gs://bucket/prefix``."""
        blobs = self.client().list_blobs(self.bucket, prefix=prefix)
        return {b.name[len(prefix):].lstrip('/'): b.download_as_bytes() for b in blobs}

    def __enter__(self) -> GcsEmulator:
        self._metadata = ThreadingHTTPServer((LOOPBACK, 0), _MetadataHandler)
        threading.Thread(target=self._metadata.serve_forever, daemon=True).start()
        data = self.workdir / 'gcs-data'
        data.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.log = (self.workdir / 'gcs-emulator.log').open('w')
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'gcp_storage_emulator', '--data-dir', str(data), 'start',
             '--host', LOOPBACK, '--port', str(self.port), '--default-bucket', self.bucket],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                with urllib.request.urlopen(f'{self.url}/storage/v1/b/{self.bucket}',
                                            timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError('the GCS emulator did not start: '
                                   + (self.workdir / 'gcs-emulator.log').read_text()[-2000:])
            time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._metadata is not None:
            self._metadata.shutdown()
            self._metadata.server_close()
        if getattr(self, 'log', None):
            self.log.close()
