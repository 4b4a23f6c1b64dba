"""The tree drawn in `ecst.exceptions`' docstring is the class hierarchy, class for class."""

import inspect
import re

from ecst import exceptions
from ecst.exceptions import EcstError


def drawn() -> dict[str, str]:
    """Each class the docstring draws, and the class it is drawn under."""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (column of the name, name) from the root down
    for line in exceptions.__doc__.splitlines():
        m = re.match(r"^(\s*(?:[│ ]   )*(?:[├└]── )?)([A-Z]\w+Error)\b", line)
        if not m:
            continue
        column, name = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= column:
            stack.pop()
        parents[name] = stack[-1][1] if stack else ""
        stack.append((column, name))
    return parents


def test_the_drawn_tree_is_the_class_hierarchy():
    classes = {name: cls for name, cls in inspect.getmembers(exceptions, inspect.isclass)
               if issubclass(cls, EcstError)}
    actual = {name: "" if cls is EcstError else cls.__bases__[0].__name__ for name, cls in classes.items()}
    assert drawn() == actual


def test_kafka_unavailable_is_a_stack_error_and_stale_state_a_state_store_error():
    from ecst.consumer.store import StaleStateError  # still importable from where it was

    assert issubclass(exceptions.KafkaUnavailableError, exceptions.StackError)
    assert StaleStateError is exceptions.StaleStateError
    assert issubclass(StaleStateError, exceptions.StateStoreError)
