"""Compute: the instance model shared by the API and the conductor, and the compute agent."""
