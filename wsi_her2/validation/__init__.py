"""Validating wsi-her2 on a lab's own cases, as the CAP guideline on HER2 image analysis asks.

``wsi-her2 validate CASES.csv -o OUT`` scores each case (:mod:`.scoring`), compares the scores with
the pathologist's and with ISH (:mod:`.statistics`), runs the reproducibility checks
(:mod:`.checks`), optionally fits the scorer's cut-offs by cross-validation (:mod:`.calibration`,
:mod:`.spaces`, :mod:`.calibrate`) and writes the report (:mod:`.report`, :mod:`.writers`,
:mod:`.html`). :mod:`.calibration_file` reads and writes the ``--dab-config`` files.

This package imports nothing heavy at import time (the CLI reads calibration files through it).
"""
