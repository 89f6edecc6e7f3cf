"""Adapters to the outside world: the database (``db``, ``models``,
``migrations``) and the WhatsApp gateways (``providers``).

The services in ``billing`` call these; the pure rules in ``billing.domain``
never do.
"""
