"""Contract-true, stateful simulators of the two APIs (WSGI apps) and their shared machinery.

Import the simulators from their modules (``bbvisma.simulators.buchhaltungsbutler``,
``bbvisma.simulators.vismanet``); run both with ``python -m bbvisma.simulators serve``.
"""
