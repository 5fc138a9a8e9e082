"""The command-line programs, installed as console scripts (setup.cfg) and wrapped by ``experiments/*.py``:
``da-run`` (:mod:`da.scripts.run`), ``da-sweep`` (:mod:`da.scripts.sweep`), ``da-tables`` (:mod:`da.scripts.tables`).
Each module's ``main(argv)`` returns the exit status."""
