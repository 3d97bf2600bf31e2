"""Build, documentation, benchmark and test tooling — never imported by the nodes, the A1111 tab or
scg_core at run time. Tests, ``docs/``, ``benchmarks/`` and ``workflows/build.py`` import from here;
nothing here imports from ``tests/``."""
