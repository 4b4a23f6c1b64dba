"""Stand-ins for a producer-database connection and for Connect, recording what ecst asks of them."""

from contextlib import contextmanager


class FakeCursor:
    def __init__(self, row):
        self.row = row

    def fetchone(self):
        return self.row


class FakeConn:
    """Answers each statement with the next of `answers` (a row, or None), after any in `active`
    (the slot-in-use check: a row while the slot is in use); records every statement."""

    def __init__(self, answers=(), active=()):
        self.answers, self.active = list(answers), list(active)
        self.executed = []

    def execute(self, query, params=None):
        self.executed.append((query, params))
        if isinstance(query, str) and "AND active" in query:
            return FakeCursor(self.active.pop(0) if self.active else None)
        return FakeCursor(self.answers.pop(0) if self.answers else None)

    @contextmanager
    def transaction(self):
        yield

    def opener(self):
        """A `producer` callable: opens this connection."""

        @contextmanager
        def open_():
            yield self

        return open_


class FakeConnect:
    """Just enough of ConnectClient: a config, a status, and the calls made."""

    url = "http://connect.invalid"

    def __init__(self, config, state="RUNNING", tasks=("RUNNING",)):
        self.config, self.state, self.tasks = config, state, list(tasks)
        self.calls = []

    def get_config(self, name):
        return self.config

    def status(self, name):
        if self.config is None:
            return None
        return {"connector": {"state": self.state},
                "tasks": [{"id": i, "state": s} for i, s in enumerate(self.tasks)]}

    def stop(self, name):
        self.calls.append(("stop", name))
        self.state = "STOPPED"

    def reset_offsets(self, name):
        self.calls.append(("reset_offsets", name))

    def offsets(self, name):
        return {"offsets": getattr(self, "held", [])}

    def alter_offsets(self, name, offsets):
        self.calls.append(("alter_offsets", name, offsets))

    def resume(self, name):
        self.calls.append(("resume", name))
        self.state = "RUNNING"
