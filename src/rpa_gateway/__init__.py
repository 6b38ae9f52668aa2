"""rpa-gateway: run RPA robots for AI agent workflows and stream their outcome as SSE."""

__version__ = "0.1.0"
