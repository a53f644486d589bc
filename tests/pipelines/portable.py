"""Beam's portable runner on this machine, for the tests: Beam's local job service and an
external worker pool, both listening on 127.0.0.1 only (Beam's ``worker_pool_main`` binds every
interface, so the pool's servicer is started here on loopback).

By default the pool's SDK workers are subprocesses of this process running this virtual
environment's ``python`` with its environment (PYTHONPATH, cwd, HOME). Given ``worker_python``
(an environment made by ``tools/worker_packages.py venv`` from what a Dataflow job stages), each
worker runs that ``python`` instead, started the way the pool starts an SDK container's boot
program, in ``worker_home`` (its cwd and HOME) with an emptied environment: no PYTHONPATH, no
variable of the launcher, and Python's isolated mode (``-I``: no user site, cwd not on the path).
"""

from __future__ import annotations

import contextlib
import os
import sys
from concurrent import futures
from typing import Iterator, Optional

# The SDK harness, as the pool's own `python -c` starts it, with the arguments the pool gives a
# container's boot program (--id=..., --control_endpoint=..., ...).
_HARNESS = ('import sys; from apache_beam.runners.worker.sdk_worker import SdkHarness; '
            'a = dict(x[2:].split("=", 1) for x in sys.argv[1:]); '
            'SdkHarness(a["control_endpoint"], worker_id=a["id"]).run()')


def _worker_boot(worker_python: str, home: str) -> str:
    """An executable that starts one SDK worker with ``worker_python`` in ``home``, in an
    emptied environment (see the module docstring) -> its path."""
    import shlex

    os.makedirs(home, exist_ok=True)
    bin_dir = os.path.dirname(worker_python)
    boot = os.path.join(home, 'boot')
    with open(boot, 'w') as f:
        f.write('#!/bin/sh\n'
                f'cd {shlex.quote(home)} || exit 1\n'
                f'exec env -i HOME={shlex.quote(home)} PATH={shlex.quote(bin_dir)}:/usr/bin:/bin '
                'LANG=C.UTF-8 TF_CPP_MIN_LOG_LEVEL=2 '
                f'{shlex.quote(worker_python)} -I -c {shlex.quote(_HARNESS)} "$@"\n')
    os.chmod(boot, 0o755)
    return boot


def _pool_class():
    from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer

    from pipelines.runner import register_worker_process

    class Pool(BeamFnExternalWorkerPoolServicer):
        """Beam's worker pool, telling ``pipelines.runner`` which process runs each worker
        (so that a worker that dies is named by its pid and signal)."""

        def StartWorker(self, request, context):  # noqa: N802 - gRPC's name
            response = super().StartWorker(request, context)
            process = self._worker_processes.get(request.worker_id)
            if process is not None:
                register_worker_process(request.worker_id, process)
            return response

    return Pool


@contextlib.contextmanager
def portable_runner(worker_python: Optional[str] = None, worker_home: Optional[str] = None
                    ) -> Iterator[list[str]]:
    """Start the job service and the worker pool; yields the pipeline options that run a job
    on them (``--runner PortableRunner`` with an EXTERNAL environment). With
    ``worker_python`` (and ``worker_home``), the workers run in that environment (module
    docstring)."""
    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2_grpc
    from apache_beam.runners.portability import local_job_service

    from pipelines.runner import loopback_only_servers

    # The pool starts its workers as `python -c ...`: this environment's python.
    path = os.environ.get('PATH', '')
    os.environ['PATH'] = os.path.dirname(sys.executable) + os.pathsep + path
    # The job service runs the job here (its control, data, state and logging servers too).
    with loopback_only_servers():
        jobs = local_job_service.LocalJobServicer()
        job_port = jobs.start_grpc_server(0)  # binds localhost
        pool = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        boot = _worker_boot(worker_python, worker_home) if worker_python else None
        servicer = _pool_class()(use_process=True, container_executable=boot)
        beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(servicer, pool)
        pool_port = pool.add_insecure_port('127.0.0.1:0')
        pool.start()
        try:
            yield ['--runner=PortableRunner', f'--job_endpoint=localhost:{job_port}',
                   '--environment_type=EXTERNAL',
                   f'--environment_config=127.0.0.1:{pool_port}']
        finally:
            pool.stop(1)
            jobs.stop()
            for process in servicer._worker_processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
            os.environ['PATH'] = path
