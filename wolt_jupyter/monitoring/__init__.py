"""Monitoring: metric sources (Prometheus, the response log), A/B and shadow analysis, drift."""
