"""Mailgate: an outbound deliverability gateway for car dealerships.

A dealer's CRM submits mail here (SMTP AUTH over STARTTLS); Mailgate inspects it,
signs it, spools it durably and relays it upstream. See README.md for operation.
"""

__version__ = "0.1.0"
