"""A local ddsp-prepare listens on the loopback interface only (Beam's DirectRunner otherwise
binds its gRPC servers to all interfaces)."""

import socket
from concurrent import futures

import pytest

from pipelines.runner import loopback_only_servers
from tests.pipelines import listening


def test_decode_proc_net_addresses():
    assert listening.decode_address('0100007F:1F90') == ('127.0.0.1', 8080)
    assert listening.decode_address('00000000:0050') == ('0.0.0.0', 80)
    assert listening.decode_address('00000000000000000000000001000000:0016') == ('::1', 22)
    assert listening.decode_address('00000000000000000000000000000000:0016') == ('::', 22)
    assert listening.decode_address('0000000000000000FFFF00000100007F:1F90') == \
        ('::ffff:127.0.0.1', 8080)


@pytest.mark.parametrize('family,address,loopback', [
    (socket.AF_INET, '127.0.0.1', True), (socket.AF_INET, '0.0.0.0', False),
    (socket.AF_INET6, '::1', True), (socket.AF_INET6, '::', False)])
def test_listeners_of_this_process_are_seen_with_their_address(family, address, loopback):
    """The scan finds a socket this process listens on, and tells loopback from the rest."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        s.listen()
        port = s.getsockname()[1]
        import os
        mine = {x for x in listening.listeners(os.getpid()) if x.port == port}
        assert len(mine) == 1
        (found,) = mine
        assert found.address == address and found.loopback is loopback


def _bound_address(server_factory):
    """Start a gRPC server the way Beam's worker handlers do and return where it listens."""
    import os

    server = server_factory(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port('[::]:0')
    server.start()
    try:
        return {x.address for x in listening.listeners(os.getpid()) if x.port == port}
    finally:
        server.stop(0)


def test_loopback_only_servers_rebinds_beams_grpc_servers():
    from apache_beam.runners.portability import local_job_service
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    # Beam's own call binds all interfaces ...
    assert not _bound_address(worker_handlers.grpc.server) <= listening.LOOPBACK
    with loopback_only_servers():
        for module in (worker_handlers, local_job_service):
            addresses = _bound_address(module.grpc.server)
            assert addresses and addresses <= listening.LOOPBACK, (module.__name__, addresses)
    # ... and is restored afterwards
    assert not _bound_address(worker_handlers.grpc.server) <= listening.LOOPBACK


@pytest.mark.slow
def test_local_prepare_listens_on_loopback_only(cli_run):
    assert cli_run.returncode == 0, cli_run.stderr[-3000:]
    # the runner's servers were seen (else the check below would pass vacuously)
    assert cli_run.listeners, f'no listening socket seen in {cli_run.samples} samples'
    exposed = sorted((x.address, x.port, x.pid) for x in cli_run.listeners if not x.loopback)
    assert not exposed, f'listening beyond loopback (address, port, pid): {exposed}'
