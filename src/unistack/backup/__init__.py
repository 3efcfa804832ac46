"""Backups: what to keep, how to take, verify and restore them."""
