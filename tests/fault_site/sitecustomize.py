"""Test only: on the PYTHONPATH of the processes the tests start (tests/faults.py), installs the
fault hook (mlops_cli.runs.FAULT_HOOK) in them when a test asked for a fault (MLOPS_FAULT)."""

import os

if os.environ.get("MLOPS_FAULT"):
    import importlib.util

    _path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "faults.py")
    _spec = importlib.util.spec_from_file_location("mlops_test_faults", _path)
    _faults = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_faults)
    _faults.install()
