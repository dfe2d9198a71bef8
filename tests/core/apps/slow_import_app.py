"""A module whose import takes long (as one loading a large model would), for the worker-command tests."""

import os
import pathlib
import time

import asyncjobs

pathlib.Path(os.environ["SLOW_IMPORT_MARKER"]).write_text("importing")
time.sleep(60)

router = asyncjobs.Router()
