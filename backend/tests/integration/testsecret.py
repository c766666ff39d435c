"""Secret: a password or token whose repr hides it.

pytest prints a failing test's arguments and the operands of a failed
assert: a test's passwords and tokens would reach CI's log. Wrapped, they
show as '<secret>'; they still compare, format and authenticate as the str
they are. No imports: the test suites' conftests load it before the client's
(aiohttp reads SSL_CERT_FILE when it is first imported).
"""


class Secret(str):
    __slots__ = ()

    def __repr__(self):
        return "'<secret>'"
