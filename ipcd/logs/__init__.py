"""The log socket and everything behind it: the datagram server, intake
(parse, credentials, rate limit), the SQLite store and its one writer,
queries and live followers, and the `logs.*` methods.
"""
