"""A real pipeline that records what each call is given."""

from typing import Any


class Spy:
    """Calls ``pipe`` and records each call's inputs in ``calls``, as a list: the run's inputs for a batched call
    (the worker passes ``batch_size`` then), ``[input]`` for a call on one input."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.calls: list[list[Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipe, name)

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        if "batch_size" not in kwargs:
            self.calls.append([inputs])
            return self.pipe(inputs, **kwargs)
        items = list(inputs)  # a list, or a generator the worker made: pass on the same kind
        self.calls.append(items)
        return self.pipe(items if isinstance(inputs, list) else (item for item in items), **kwargs)
