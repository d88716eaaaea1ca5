"""Reporting a run: terminal tables and progress (`terminal`)."""
