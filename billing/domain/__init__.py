"""The pure rules: no database, no network, no clock of their own.

One file per rule, so a newcomer can point at it:

- ``phones``: Brazilian numbers to WhatsApp's E.164, and what they look like.
- ``duedates``: due dates, days overdue and their Portuguese wording.
- ``money``: amounts in reais, parsed and written the Brazilian way.
- ``templating``: placeholders, rendering and their checks.
- ``rotation``: which of a template's variations a message gets.
- ``hours``: business hours, holidays and when a send may happen.
- ``replies``: what a customer's answer means.
- ``signing``: HMAC signatures of callbacks and webhooks.
- ``states``: the names of every status.
- ``message_types``: the kinds of message, each declared once.

Services (``billing.*``) use these with the database; adapters
(``billing.adapters``) talk to the outside world.
"""
