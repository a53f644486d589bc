"""Cohesive DSP building blocks behind the reference-compatible `ddsp_core.core` façade."""
