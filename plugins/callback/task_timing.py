"""Wall time of every task, from its header to the next one, written as JSON for `python -m bench site`."""

from __future__ import annotations

DOCUMENTATION = r"""
name: task_timing
type: aggregate
short_description: Write the wall time of each task to a JSON file
description:
  - Times each task (and handler) from its start to the start of the next one, the way a person reading the
    output would time it, across all hosts of the play.
  - At the end of the playbook, writes a JSON list of C({"play", "task", "seconds"}) objects in run order to
    O(output_path). Nothing is printed; the benchmark C(python -m bench site) reads the file.
  - Use it when a run feels slow, to see which tasks take the time.
version_added: 1.1.0
author:
  - llm-relay maintainers (@llm-relay)
requirements:
  - enable in configuration (C(callbacks_enabled = llm_relay.homelab.task_timing))
options:
  output_path:
    description: File the JSON list is written to. Nothing is written when it is not set.
    type: path
    env:
      - name: LLM_RELAY_TASK_TIMING_FILE
    ini:
      - section: callback_task_timing
        key: output_path
"""

import json
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "llm_relay.homelab.task_timing"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._play = ""
        self._current = None
        self._timings = []

    def _close(self):
        if self._current is not None:
            play, task, started = self._current
            self._timings.append(
                {"play": play, "task": task, "seconds": round(time.monotonic() - started, 3)}
            )
            self._current = None

    def _open(self, task):
        self._close()
        self._current = (self._play, task.get_name().strip(), time.monotonic())

    def v2_playbook_on_play_start(self, play):
        self._close()
        self._play = play.get_name().strip()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._open(task)

    def v2_playbook_on_handler_task_start(self, task):
        self._open(task)

    def v2_playbook_on_stats(self, stats):
        self._close()
        path = self.get_option("output_path")
        if path:
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(self._timings, handle, indent=1)
