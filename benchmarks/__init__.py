"""The project's benchmarks: scripts run from the repository root, and the parts they import."""
