"""DNS for the gateway: a caching resolver, recipient-domain validation and typo hints.

``resolver.py`` wraps dnspython's asynchronous resolver (explicit nameservers, a bounded
timeout per question, answers cached for their TTL); ``domains.py`` decides at RCPT
whether a recipient domain can receive mail at all; ``typos.py`` suggests the provider a
mistyped domain probably meant. The self-checks of the dealers' published records live
in ``gateway/dns/selfcheck.py`` and use the same resolver.
"""
