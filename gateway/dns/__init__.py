"""DNS for the gateway: a caching resolver, recipient-domain validation and typo hints.

``resolver.py`` wraps dnspython's asynchronous resolver (explicit nameservers, a bounded
timeout per question, answers cached for their TTL); ``domains.py`` decides at RCPT
whether a recipient domain can receive mail at all; ``typos.py`` suggests the provider a
mistyped domain probably meant. The self-checks of the dealers' published records run in
``selfcheck.py``, through the same resolver, with the SPF evaluator of ``spf.py`` and the
DMARC record and alignment rules of ``dmarc.py``.
"""
