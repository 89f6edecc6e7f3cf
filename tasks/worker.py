"""The module Dramatiq's CLI runs: ``dramatiq tasks.worker [-Q send ...]``.

Dramatiq's CLI imports a module and then uses the global broker; importing
this one wires the process (:func:`tasks.setup`, settings from the
environment), so the broker it finds carries the actors. ``billing worker``
wires its processes the same way and replaces those that die.
"""
from __future__ import annotations

import tasks

#: This process's wiring; ``dramatiq tasks.worker:broker`` names the broker.
wiring = tasks.setup()
broker = wiring.broker
