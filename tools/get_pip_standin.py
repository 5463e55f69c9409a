"""Stand-in for get-pip.py, named as one: ansible-test bootstraps pip into each sanity venv by running
get-pip.py, which it downloads from ci-files.testing.ansible.com, a host this machine cannot reach.

tools/run_ansible_test.py puts this file where ansible-test caches get-pip.py, next to the pip wheel it
downloaded from PyPI. Like get-pip.py it installs pip (the version ansible-test asks for) into the running
interpreter, here from that wheel only (no index). get-pip.py's own --no-setuptools/--no-wheel flags mean
"install only pip", which is all this does.
"""

import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
GET_PIP_ONLY = ("--no-setuptools", "--no-wheel")

args = [a for a in sys.argv[1:] if a not in GET_PIP_ONLY]
wheels = sorted(f for f in os.listdir(HERE) if f.startswith("pip-") and f.endswith(".whl"))
if not wheels:
    sys.exit(f"get-pip stand-in: no pip wheel in {HERE}; run `make setup` (tools/run_ansible_test.py prime)")
# pip runs from its wheel, as get-pip.py runs it from a zip.
sys.path.insert(0, os.path.join(HERE, wheels[-1]))
sys.argv = ["pip", "install", "--no-index", "--find-links", HERE, "--upgrade", "--force-reinstall", *args]
runpy.run_module("pip", run_name="__main__", alter_sys=True)
