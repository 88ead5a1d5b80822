"""Calibration data: expert-balanced self-sampling, text windows, and the balance metric σ."""
