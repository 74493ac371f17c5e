"""Tests of sinks.report: the query model, the terminal and HTML renderings, the command."""
