"""The supervised trial process: a sweep's trials run in a child process that the Beam
element supervises, so that a trial whose process dies is failed and retried at once, within
the same sweep run.
"""


from __future__ import annotations

import logging
import os
from typing import Optional

from trainer.experiments.sweep import run_trial
from trainer.experiments.sweep_spec import SweepSpec
from trainer.experiments.sweep_study import MAX_RETRIES, TrialOutcome, fail_dead_trial, first_value

logger = logging.getLogger(__name__)


def exit_with_parent() -> None:
    """In a child started by :mod:`multiprocessing`: end this process at once when its parent
    process ends, however it ends (a Beam worker killed with SIGKILL leaves no one to stop its
    trial, which would otherwise train on, and heartbeat, while the job that is run again
    resumes the same trial)."""
    import multiprocessing
    import threading
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch():
        wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name='ddsp-exit-with-parent', daemon=True).start()


def _trial_worker(connection, threads: Optional[int]) -> None:
    """The child process of a :class:`TrialProcess`: TensorFlow imported once, then trial
    after trial as the parent sends them (``None``: stop). It ends with its parent
    (:func:`exit_with_parent`)."""
    from ddsp_core import runtime

    exit_with_parent()

    runtime.import_tensorflow()
    if threads:
        runtime.set_threads(threads)
    while True:
        try:
            message = connection.recv()
        except EOFError:  # the parent went away
            return
        if message is None:
            return
        spec, element, parent_run_id = message
        try:
            outcome = run_trial(spec, element, parent_run_id,
                                on_start=lambda number: connection.send(('started', number)))
        except BaseException as e:  # the parent raises it; an interrupt also ends this process
            connection.send(('error', f'{type(e).__name__}: {e}'))
            raise
        connection.send(('outcome', outcome.to_dict()))


def _exit_reason(exitcode: Optional[int]) -> str:
    if exitcode is not None and exitcode < 0:
        import signal

        try:
            return f'was killed by {signal.Signals(-exitcode).name}'
        except ValueError:
            return f'was killed by signal {-exitcode}'
    return f'exited with code {exitcode}'


class TrialProcess:
    """Runs a sweep's trials in a child process it supervises, so that a trial whose process
    dies (kill -9, the kernel's out-of-memory killer) is retried within the same sweep run.

    The child (started with ``spawn``, TensorFlow imported once) runs :func:`run_trial` for
    each element and tells the parent the trial's number when it starts. If the child dies,
    the parent fails that trial in the study at once and enqueues its retry
    (:func:`fail_dead_trial`: Optuna's ``tell`` and the retry callback the heartbeat path
    uses), then resumes the element in a new child, which takes that retry: the same model
    directory, so training goes on from the trial's last checkpoint in the same MLflow run
    (``mlflow_run.json`` names it). After :data:`MAX_RETRIES` retries of one trial its
    outcome is a FAIL naming the cause.

    The supervisor is the Beam element's process (:class:`pipelines.sweep.RunTrial`), so it
    outlives the trial's process on any runner; when the supervisor dies too, the trial's
    process ends with it (:func:`exit_with_parent`), its heartbeat stops and the study fails
    it as stale (:func:`open_study`)."""

    def __init__(self, threads: Optional[int] = None):
        self.threads = threads
        self.process = None
        self.connection = None

    def start(self) -> None:
        import multiprocessing

        context = multiprocessing.get_context('spawn')  # no fork of a process with threads
        parent, child = context.Pipe()
        self.process = context.Process(target=_trial_worker, args=(child, self.threads),
                                       name='ddsp-sweep-trial', daemon=True)
        self.process.start()
        child.close()
        self.connection = parent

    def close(self) -> None:
        if self.process is None:
            return
        try:
            self.connection.send(None)
        except OSError:
            pass
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()
        self.process = self.connection = None

    def _run_once(self, spec: SweepSpec, element: dict, parent_run_id: Optional[str],
                  started: list) -> Optional[dict]:
        """The outcome, or None when the child died (the trial's number, if it got one, is
        appended to ``started``)."""
        if self.process is None or not self.process.is_alive():
            self.close()
            self.start()
        try:
            self.connection.send((spec, element, parent_run_id))
            while True:
                kind, value = self.connection.recv()
                if kind == 'started':
                    started.append(value)
                elif kind == 'outcome':
                    return value
                else:
                    raise RuntimeError(f'sweep {spec.name}: the trial process failed: {value}')
        except (EOFError, OSError):  # the child died
            return None

    def run(self, spec: SweepSpec, element: dict, parent_run_id: Optional[str]) -> dict:
        """Run ``element`` (see :func:`run_trial`) to its outcome (as a dict), through
        deaths of the trial's process."""
        for _ in range(MAX_RETRIES + 1):
            started: list[int] = []
            outcome = self._run_once(spec, element, parent_run_id, started)
            if outcome is not None:
                return outcome
            self.process.join(10)
            reason = (f'its trial process (pid {self.process.pid}) '
                      f'{_exit_reason(self.process.exitcode)}')
            self.close()
            if not started:  # died before it had a trial: run the element again
                logger.warning('sweep %s: %s before starting a trial; starting it again',
                               spec.name, reason)
                continue
            number = started[-1]
            self.start()  # the next child imports TensorFlow while the trial is retried
            stored, retry = fail_dead_trial(spec, number, reason)
            if stored.state.name != 'FAIL':  # told before it died: the study's outcome
                return TrialOutcome(number, stored.user_attrs.get('digest', ''),
                                    dict(stored.params), stored.state.name,
                                    first_value(stored),
                                    run_id=stored.user_attrs.get('run_id')).to_dict()
            if retry is None:
                return TrialOutcome(number, stored.user_attrs.get('digest', ''),
                                    dict(stored.params), 'FAIL', error=(
                                        f'{reason}; retried {MAX_RETRIES} times already, not '
                                        'again')).to_dict()
            logger.warning('sweep %s trial %d: %s; retried now', spec.name, number, reason)
            element = {'mode': 'resume', 'number': number}
        return TrialOutcome(started[-1] if started else -1, '', {}, 'FAIL', error=(
            f'{reason}: {MAX_RETRIES + 1} times, not retried again')).to_dict()
