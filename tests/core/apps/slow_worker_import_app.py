"""A module whose import takes long only in supervised worker processes (not in the supervisor's router check)."""

import os
import pathlib
import time

import asyncjobs

if "ASYNCJOBS_WORKER_INDEX" in os.environ:
    pathlib.Path(os.environ["SLOW_IMPORT_MARKER"] + os.environ["ASYNCJOBS_WORKER_INDEX"]).write_text("importing")
    time.sleep(60)

router = asyncjobs.Router()


@router.handler("x")
async def handle(task: asyncjobs.Task) -> None:
    return None
