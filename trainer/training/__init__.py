"""Training: prepared datasets as tf.data (``data``), tf.distribute strategies by name
(``strategy``), the pieces of a run (``loop``: build, restore, step, save, summaries) and
``train()`` with the ``ddsp-train`` CLI (``train``).
"""
