"""Experiments: hyperparameter sweeps and ``ddsp-compare``.

- ``sweep``: one trial of a sweep (train, report to Optuna, record in MLflow), and every
  sweep name the CLI and tests use, from the modules below.
- ``sweep_spec``: the sweep's spec (YAML keys or flags), its validation, a trial's hash.
- ``sweep_study``: the Optuna study: points, samplers, pruner, storage and heartbeats, a dead
  trial's retry, how an element gets its trial.
- ``sweep_process``: the supervised child process a sweep's trials train in.
- ``sweep_report``: the summary: Optuna's table and plots, logged to the parent run and written
  to ``output_dir/sweep/``.
- ``compare``: ``ddsp-compare``, runs side by side and the listening report (the jinja2 template
  ``templates/listening_report.html``).
"""
