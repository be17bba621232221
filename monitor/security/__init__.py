"""HTTP-side credentials and limits, checked before a view changes anything.

tokens.py: API tokens, how programs sign in over HTTP and WebSockets;
ratelimit.py: how many posts, likes, comments and sign-in attempts a user
or an address may make; client_address.py: which address a request counts
on, behind trusted proxies.
"""
