"""The web monitor's page, script and style, served by ``api/monitor.py``."""
