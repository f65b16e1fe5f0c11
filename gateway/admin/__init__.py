"""The operator API, one room per concern.

``ops`` the operations themselves (``AdminOps``: every rule, used by the API and by the
offline commands alike); ``endpoints`` the table of endpoints, from which the routes and
``/api/openapi.json`` are built; ``handlers`` one function per endpoint (parsed request in,
``AdminOps`` call, JSON out); ``bodies`` the request bodies; ``views`` the JSON form of
each record; ``schemas`` the response schemas; ``api`` the HTTP edge (routes, access,
errors); ``tokens`` the bearer tokens.
"""
