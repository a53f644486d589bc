"""Beam's portable runner on this machine, for the tests: Beam's local job service and an
external worker pool, both listening on 127.0.0.1 only (Beam's ``worker_pool_main`` binds every
interface, so the pool's servicer is started here on loopback).

Not yet separated from the launcher: the pool's SDK workers are subprocesses of this process,
running this virtual environment's ``python`` with its environment (PYTHONPATH, cwd, HOME), not
a fresh environment populated from staged packages as a Dataflow worker is.
"""

from __future__ import annotations

import contextlib
import os
import sys
from concurrent import futures
from typing import Iterator


@contextlib.contextmanager
def portable_runner() -> Iterator[list[str]]:
    """Start the job service and the worker pool; yields the pipeline options that run a job
    on them (``--runner PortableRunner`` with an EXTERNAL environment)."""
    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2_grpc
    from apache_beam.runners.portability import local_job_service
    from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer

    from pipelines.runner import loopback_only_servers

    # The pool starts its workers as `python -c ...`: this environment's python.
    path = os.environ.get('PATH', '')
    os.environ['PATH'] = os.path.dirname(sys.executable) + os.pathsep + path
    # The job service runs the job here (its control, data, state and logging servers too).
    with loopback_only_servers():
        jobs = local_job_service.LocalJobServicer()
        job_port = jobs.start_grpc_server(0)  # binds localhost
        pool = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        servicer = BeamFnExternalWorkerPoolServicer(use_process=True)
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
