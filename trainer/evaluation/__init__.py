"""Evaluation: resynthesis metrics (``metrics``) and the evaluation of a trained model that
``ddsp-eval`` runs (``evaluate``).
"""
