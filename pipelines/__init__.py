"""pipelines: the Apache Beam jobs. The DirectRunner is the embedded default; the same code runs on
Dataflow (or any portable runner) by pipeline options.

- ``ddsp-prepare`` (``prepare_dataset``): recordings -> TFRecords with a manifest; its Beam steps
  (DoFns, sharding, writing the manifest) are ``prepare_steps``. Its parts, each a pure function
  tested on its own: ``options`` (the command's options), ``inputs`` (what
  ``--input`` matched, the split of each file), ``audio_io`` (decoding, resampling), ``chunking``
  (chunk and window plans), ``crepe_inference`` (CREPE as a RunInference model handler),
  ``examples`` (chunk -> serialised examples), ``splitting`` (held-out examples), ``stats``
  (mergeable statistics) and ``manifest`` (``manifest.json`` and ``files.jsonl``).
- ``ddsp-eval`` (``evaluate``): a trained model's resynthesis of a dataset split, at scale.
- ``ddsp-sweep`` (``sweep``): hyperparameter sweeps whose trials are elements of a pipeline.
- ``runner``: what the three share with their Beam runner (option spelling, local runners, the
  run-and-wait, GPU slots); ``worker_death``: a local worker process that dies fails the job
  at once instead of hanging it, and the run-and-wait runs it again.
"""
