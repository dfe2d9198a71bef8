"""One command-line adapter per system, ``peer_<name>.py``, each run with its own virtualenv's Python."""
