"""Diagnose before fixing: checks that yield findings with evidence and the fix that
repairs each (docs/diagnose.md). Importing this package starts nothing."""
