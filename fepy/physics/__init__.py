"""Shared physics kernels (Laplacians, ...), used by several targets and families."""
