"""Experiments: a sweep's spec, search and trials (``sweep``) and ``ddsp-compare`` (``compare``,
whose HTML listening report is the jinja2 template ``templates/listening_report.html``).
"""
