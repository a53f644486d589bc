"""Experiments: a sweep's spec, search and trials (``sweep``) and ``ddsp-compare`` (``compare``).
"""
