"""Training: prepared datasets as tf.data (``data``), tf.distribute strategies by name
(``strategy``), the learning-rate schedule (``schedule``: warm-up, then the reference's
exponential decay), the pieces of a run (``loop``: build, restore, step, save, summaries) and
``train()`` with the ``ddsp-train`` CLI (``train``).
"""
