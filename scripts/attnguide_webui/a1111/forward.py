"""Instance `forward`s on A1111 modules: ours sit on top of whatever forward was there
(another extension's instance forward, else the class's, i.e. the optimisation active now)
and hand back exactly that when removed."""
import contextlib


class InstanceForward:
    def __init__(self, module):
        self.module = module
        self.saved = module.__dict__.get("forward")

    def previous(self, *args, **kwargs):
        if self.saved is not None:
            return self.saved(*args, **kwargs)
        return type(self.module).forward(self.module, *args, **kwargs)

    def remove(self):
        """Off the module if still on top; wrapped by someone since, it stays in their chain."""
        hand_back(self.module, "forward", self, self.saved)


def hand_back(obj, name, ours, saved):
    """Undo `obj.<name> = ours` if ours is still on top: back to `saved` (what the instance had
    before, e.g. another extension's) or, when it had nothing, to the class's attribute."""
    if obj.__dict__.get(name) is ours:
        if saved is None:
            delattr(obj, name)
        else:
            setattr(obj, name, saved)


@contextlib.contextmanager
def forwards_replaced(modules, make):
    """Each module's forward is make(module) for the duration of the block."""
    saved = [(m, m.__dict__.get("forward")) for m in modules]
    for m in modules:
        m.forward = make(m)
    try:
        yield
    finally:
        for m, forward in saved:
            if forward is None:
                m.__dict__.pop("forward", None)
            else:
                m.forward = forward
