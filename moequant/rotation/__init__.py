"""Residual-stream rotation (method §4): norm fusion, random Hadamard Q, optional online Hadamard."""

from moequant.rotation.artifact import read_metadata, restore_online_hadamard, save_rotated
from moequant.rotation.config import RotationConfig
from moequant.rotation.fuse import check_norms
from moequant.rotation.hadamard import HadamardPlan, hadamard_matrix, is_supported, plan, random_signs
from moequant.rotation.online import OnlineHadamard, install_online_hadamard
from moequant.rotation.outliers import expert_outlier_ratios, outlier_ratio
from moequant.rotation.rotate import ResidualRotation, rotate_model, untie_lm_head
from moequant.rotation.transform import hadamard_transform, resolve_backend, walsh_hadamard

__all__ = [
    "HadamardPlan",
    "OnlineHadamard",
    "ResidualRotation",
    "RotationConfig",
    "check_norms",
    "expert_outlier_ratios",
    "hadamard_matrix",
    "hadamard_transform",
    "install_online_hadamard",
    "is_supported",
    "outlier_ratio",
    "plan",
    "random_signs",
    "read_metadata",
    "resolve_backend",
    "restore_online_hadamard",
    "rotate_model",
    "save_rotated",
    "untie_lm_head",
    "walsh_hadamard",
]
