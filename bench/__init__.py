"""The benchmark: Heartleaf's figures beside the peers', measured on the same work in one run.

``python -m bench`` (``make bench``; ``make bench-quick`` in CI) maps its deterministic
workload (``generator``) into Heartleaf, posts it through the ledger the service runs
(``api.app.build_ledger``) and through a real ``heartleaf serve`` process with every rule
on, reads at two history sizes, runs ``heartleaf verify`` on the large one and ``heartleaf
demo`` on an empty database, converts through an exchange protocol, reads the reciprocity
matrix of 50 communities and proposes a clearing of 2,000 obligations between 100, runs
the peers on the same workload (the naive ceiling always; django-hordak and pgledger when
their outside material is there, and the summary says which is absent and why), and
prints each Heartleaf figure beside the comparable peer figure, the ratio and the target
of issue 7. It asserts nothing about time: it reports. Figures go to
``bench/results/<timestamp>-<sizes>.json`` (gitignored), the tables beside them as .md.
Nothing here needs a file outside the repository.

Modules: ``generator`` (the transfers), ``workload`` (their mapping into Heartleaf),
``databases`` (fresh SQLite files and PostgreSQL databases cloned from a template),
``posting`` (in-process), ``server`` and ``over_http`` (the real server and its clients),
``reads``, ``checks`` (verify and demo), ``conversions`` (the exchange), ``reciprocity``
(the matrix and clearing), ``peers`` (which runs ``naive``, ``hordak`` and ``pgledger``),
``report`` (tables, comparisons and targets), ``measure`` (percentiles, memory) and
``profiling`` (``python -m bench.profiling``: where a single transfer's time goes).
``tests/test_bench.py`` runs the tiny sizes end to end, in a copy of the repository with
nothing beside it, so none of it rots.
"""
