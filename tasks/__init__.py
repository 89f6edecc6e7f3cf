"""Dramatiq actors, and the one call that wires a process to run or send them.

Importing this package only declares the actors: it reads no environment,
configures no logging, binds no database and sets no global broker. A process
that sends or runs them calls :func:`setup` first::

    import tasks
    tasks.setup()                    # settings from the environment
    tasks.start_queue(queue_id)

Workers run them with ``billing worker`` (or ``dramatiq tasks.worker``).
Everything exported here comes from :mod:`tasks.actors`: a new actor is
declared there and nowhere else.
"""
from __future__ import annotations

from tasks import actors
from tasks.actors import *  # noqa: F401,F403  (the actors and enqueue helpers; actors.__all__)
from tasks.wiring import Wiring, setup

__all__ = [*actors.__all__, "Wiring", "setup"]
