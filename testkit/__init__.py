"""Helpers shared by the test suite: real servers on loopback, subprocess environments, HTTP."""
