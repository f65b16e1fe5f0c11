"""The deliverability report e-mailed to a dealer's contacts, daily or weekly (``[report]``).

* ``records.py`` (pure): the tallies the store answers with (sent log, events, drops,
  findings) and the claim of a report period;
* ``periods.py`` (pure): which period is due, per the dealer's ``[report] every``;
* ``providers.py``: which mailbox provider receives a domain's mail (Google, Microsoft,
  Yahoo, other), from the recipient domain and its MX through the gateway's resolver;
* ``content.py`` (pure): the report's figures and its text and HTML;
* ``links.py`` (pure): the contact's signed unsubscribe link;
* ``service.py``: gathers the figures from the store, claims the period (once across
  nodes), and queues the e-mails through the gateway's own queue as system messages.
"""
