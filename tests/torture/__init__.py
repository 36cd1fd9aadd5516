"""Torture tests of issue 22: the sample boundary, verified caches, comparability, own files, safe outputs."""
