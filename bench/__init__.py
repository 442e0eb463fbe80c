"""Benchmarks and the fault suite of the sync (not timed tests).

``python -m bench run``    API calls per record, throughput, engine-side time, memory, a naive
                           baseline, quota pacing and parallel batches, written to
                           ``bench/results/<date>.md`` (+ ``latest.md``);
``python -m bench faults`` the fault table (fault, records, duplicates, lost, parked, outcome).

Everything runs against the in-process simulators of :mod:`bbvisma.simulators`; nothing here
touches a network beyond 127.0.0.1.
"""
