"""Tests of ml_assets; the layout mirrors the package."""
