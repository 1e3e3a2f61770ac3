"""The fidelity proof (issue 8): every provider adapter driven through Envoy by the openai SDK.

Two halves share this package:
- the shared cases (../shared/fidelity): real provider exchanges replayed by a loopback
  upstream (tests/support/replay.py), judged by `cases` and `judge` (tests/e2e/fidelity/test_cases.py);
- the matrix: provider x feature x (non-streaming, streaming) against the providers' emulators
  (`matrix`, `environment`), printed by `python -m tests.fidelity` and run by
  tests/e2e/fidelity/test_matrix.py.
"""
