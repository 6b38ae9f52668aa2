"""The command line's side of the service: a client for a running gateway and the
commands that show and steer its executions (``rpa-gateway ls``, ``show``, ``watch``...)."""
