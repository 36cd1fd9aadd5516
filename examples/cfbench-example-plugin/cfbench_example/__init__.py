"""Example cfbench plugin: a rule-based editor that paints or removes soft opacities."""
