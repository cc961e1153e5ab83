"""Runs differential-test programs on Python's greenlet and writes their traces.

The Python half of tests/differential.rs; its Rust mirror is
tests/differential/rust_driver.rs, and the operation language is described in
tests/differential/program.rs. Usage:

    python driver.py PROGRAMS TRACES

All programs run in this one process, one after the other, on the main
greenlet. The trace of each is written as

    trace SEED
    <one line per event>
    end

Invariant kept throughout: the driver holds a greenlet only where the Rust
driver holds a handle (the table, parent links, the running greenlet, and the
target of a switch or throw while it lasts). No local variable keeps a
greenlet across a switch, and no exception object outlives its `except`
block, so reference counting frees a greenlet exactly when Rust drops its last
handle. The cyclic garbage collector is off, so nothing is freed at a random
moment.

Where Rust differs from Python by design, this driver maps Python's behaviour
to Rust's (each at the spot, marked "Mapping"):

- M1: a greenlet that swallows the GreenletExit of its drop is asked again
  until it is dead (KillUntilDead, settle);
- M2: an unstarted greenlet that the GreenletExit value of an exited child
  reaches dies without running (make_run);
- M3: an error reaching an unstarted greenlet is traced once, into the
  greenlet aimed at (trace_event);
- M4: a greenlet without a table entry gives its new children main as parent
  (new), so that it is never resurrected while being killed;
- M5: a kill run by an unstarted greenlet that Python starts only to raise in
  it has no Rust equivalent; such a program is marked "inexact:" and not
  compared (tracer).

The Rust side maps typed values: `Exited` is a value although Rust spells it
`Err`, and a Python exception is `Err(Thrown)` or a panic (rust_driver.rs).
"""

import ctypes
import gc
import sys
import weakref

import greenlet as greenlet_module
from greenlet import GreenletExit, getcurrent, greenlet


class Thrown(Exception):
    """An error raised by `raise:T` or thrown by `th:K:T` (Rust: `Thrown(Tag)`)."""

    def __init__(self, tag):
        super().__init__(tag)
        self.tag = tag


class Panic(Exception):
    """An error raised by `panic:T` (Rust: a panic with a `Tag` payload)."""

    def __init__(self, tag):
        super().__init__(tag)
        self.tag = tag


PROGRAM = []  # scripts, main first; each a list of op tuples
TABLE = []  # one slot per greenlet, main first
TRACE = []
STARTED = set()
FINISHED = set()


def log(line):
    TRACE.append(line)


def exists(k):
    return 0 <= k < len(TABLE) and TABLE[k] is not None


def index_of(g):
    if g is None:
        return "-"
    return str(getattr(g, "k", "?"))


def parse_op(word):
    fields = word.split(":")
    name = fields[0]
    rest = []
    for f in fields[1:]:
        rest.append(f if f in ("c", "p") else int(f))
    return (name, *rest)


def parse(text):
    programs = []
    lines = [l.strip() for l in text.splitlines()]
    lines = [l for l in lines if l and not l.startswith("#")]
    i = 0
    while i < len(lines):
        seed = lines[i].split()[1]
        n = int(lines[i + 1].split()[1])
        scripts = []
        for k in range(n + 1):
            words = lines[i + 2 + k].split()
            assert words[0] == f"g{k}", words
            scripts.append([parse_op(w) for w in words[1:]])
        assert lines[i + 2 + n + 1] == "end"
        programs.append((seed, scripts))
        i += n + 4
    return programs


# ---------------------------------------------------------------------------
# Operations


def attempt(kind, j, arg):
    """Switches or throws; the target is only on the evaluation stack."""
    try:
        if kind == "sw":
            r = TABLE[j].switch(arg)
        elif kind == "th":
            EXPLICIT_THROW[0] = True
            r = TABLE[j].throw(Thrown(arg))
        else:
            EXPLICIT_THROW[0] = True
            r = TABLE[j].throw(GreenletExit)
    except Thrown as e:
        outcome = ("thrown", e.tag)
    except Panic as e:
        outcome = ("panic", e.tag)
    except GreenletExit:
        outcome = ("exit",)
    else:
        outcome = ("exited",) if isinstance(r, GreenletExit) else ("v", r)
        del r
    EXPLICIT_THROW[0] = False
    reinstall_tracer()
    settle()
    return outcome


def show(outcome):
    return " ".join(str(x) for x in outcome)


def make_run(j):
    def run(*args):
        if not args or isinstance(args[0], GreenletExit):
            # Mapping M2: an unstarted greenlet reached by the GreenletExit of
            # an exited child (the child's parent, or the nearest unstarted
            # ancestor of a dead one). Python starts the body anyway, with
            # no argument if the child raised GreenletExit, or with the
            # instance if the child returned it. A Rust body takes an i64:
            # Rust's unstarted greenlet dies without running and `Exited`
            # goes on to its parent. Do that here: log nothing, and return
            # a GreenletExit instance, which the parent sees as `exited`.
            EXITED.add(j)
            return GreenletExit()
        (arg,) = args
        reinstall_tracer()
        log(f"g{j} start {arg}")
        STARTED.add(j)
        end = interp(j, ("v", arg))
        FINISHED.add(j)
        kind = end[0]
        if kind == "ret":
            return end[1]
        if kind in ("raise", "thrown"):
            raise Thrown(end[1])
        if kind == "panic":
            raise Panic(end[1])
        if kind == "exit":
            EXITED.add(j)
            raise GreenletExit
        if kind == "exited":
            EXITED.add(j)
            return GreenletExit()
        raise AssertionError(end)

    return run


def query(c, j):
    g = TABLE[j]
    s, d, a = int(g.dead or bool(g)), int(g.dead), int(bool(g))
    p = index_of(g.parent)
    del g
    log(f"g{c} q {j} s{s} d{d} a{a} p{p}")


def new(c, j, p):
    if exists(p):
        parent = TABLE[p]
    elif exists(c):
        parent = None  # the current greenlet
    else:
        # Mapping M4: the current greenlet has no table entry, so it may be
        # being killed by a drop; a child of it would resurrect it, which
        # stops Python's kill but not Rust's. Avoided: main is the parent.
        parent = TABLE[0]
    g = greenlet(make_run(j), parent)
    del parent
    g.k = j
    ADDRESSES[id(g)] = weakref.ref(g)
    old = TABLE[j]
    TABLE[j] = g
    del g
    del old
    settle()
    log(f"g{c} new {j} p{index_of(TABLE[j].parent)}")


def set_parent(c, j, p):
    if not (exists(j) and exists(p)):
        log(f"g{c} par {j} {p} nog")
        return
    try:
        TABLE[j].parent = TABLE[p]
        r = "ok"
    except ValueError:
        r = "cycle"
    except AttributeError:
        r = "main"
    settle()
    log(f"g{c} par {j} {p} {r}")


def drop(c, j):
    if not exists(j):
        log(f"g{c} del {j} nog")
        return
    log(f"g{c} del {j}")
    TABLE[j] = None  # if that was the last reference, Python kills it here
    settle()
    log(f"g{c} deld {j}")


class KillUntilDead:
    """Stands in for sys.stderr while programs run, to map one difference.

    Mapping M1 (deliberate difference, SPEC "Core: greenlet semantics" 6): a
    greenlet that swallows the GreenletExit raised when its last reference
    goes "keeps being asked to exit" in Rust, whose drop returns only once it
    is dead. Python throws once; if the greenlet is still alive and nothing
    else refers to it, its dealloc prints "GreenletExit did not kill <repr>"
    to sys.stderr and leaks it on purpose (one extra reference). That print
    is where this class steps in, still inside the dealloc: it throws again,
    with the current greenlet as parent, until the greenlet is dead, then
    gives back the leaked reference, so that the dealloc goes on to free it
    (and release its parent) as Rust's drop does.
    """

    def __init__(self):
        self.pending = False

    def write(self, text):
        if text == "GreenletExit did not kill ":
            self.pending = True
        elif self.pending:
            self.pending = False
            address = int(text.split(" object at ")[1].split()[0], 16)
            victim = ADDRESSES[address]
            kill_like_rust(victim)
            ctypes.pythonapi.Py_DecRef(ctypes.py_object(victim()))
        return len(text)

    def flush(self):
        pass


ADDRESSES = {}  # id(greenlet) -> weak reference, for KillUntilDead
VICTIMS = []  # (victim, killer) weak references, for settle()
HELD = []  # the parents of greenlets kill_like_rust() is killing
EXPLICIT_THROW = [False]  # set by the driver's own throws, for tracer()
TRACING = [False]  # whether tracer() logs (the op `tr`)
TRACE_PANIC = []  # the tag the tracer raises on its next event (the op `tp`)
EXITED = set()  # greenlets whose body ended with GreenletExit, see is_stub_entry()
STUB = [None]  # the greenlet the last event entered, if a stub (is_stub_entry())


def reinstall_tracer():
    """Puts tracer() back after it raised (greenlet then removes it)."""
    if greenlet_module.gettrace() is None:
        greenlet_module.settrace(tracer)


def tracer(event, args):
    """The tracer, always installed: notes each kill by dealloc (a throw
    neither the driver nor a dying greenlet made) for settle(), and traces
    the events while the program's tracer is on (the ops `tr` and `tp`)."""
    origin, target = args
    del args  # no greenlet in this frame, should a raise keep it
    if EXPLICIT_THROW[0]:
        EXPLICIT_THROW[0] = False  # the driver's own throw (or its switch)
    elif event == "throw" and not origin.dead:
        VICTIMS.append((weakref.ref(target), weakref.ref(origin)))
        if origin.k == STUB[0] and not running_body(origin):
            # Mapping M5 (deliberate difference, no equivalent): the killer is
            # a stub, an unstarted greenlet that an error reached and that
            # Python runs a little (the switch into it dropped the sender's
            # last reference); Rust never runs it, and the kill happens
            # where the error lands, so the victim meets other greenlets
            # suspended elsewhere. Rare; the program is not compared.
            log("inexact: a greenlet Rust never runs kills one")
    STUB[0] = target.k if is_stub_entry(event, origin, target) else None
    if TRACING[0] or TRACE_PANIC:
        logged = trace_event(event, origin, target)
        del origin, target
        if logged:
            panic_if_armed()


def trace_event(event, origin, target):
    """Logs a traced event, mapping what Rust does differently; True if it
    logged it.

    Mapping M3: an unstarted greenlet that an error (or the GreenletExit value
    of an exited child) reaches never runs in Rust: it dies, and the error
    goes on to its nearest live ancestor, traced once, as the event into the
    greenlet aimed at. Python starts it (a "stub"), raises in it and climbs
    out of it: a second event, from the dead stub, not logged here.
    """
    if origin.dead and origin.k not in STARTED:
        return False
    log(f"trace {event} {index_of(origin)} {index_of(target)}")
    return True


def is_stub_entry(event, origin, target):
    """Whether this event enters an unstarted greenlet that will not run its
    body: an error reaches it, or the GreenletExit value of an exited child
    (see make_run)."""
    return not running_body(target) and (event == "throw" or origin.k in EXITED)


def running_body(g):
    """Active, and not just a stub that Python started to raise in it."""
    return bool(g) and (g.parent is None or g.k in STARTED)


def panic_if_armed():
    """The op `tp`: after its first traced event, the tracer raises.

    The error lands where the event's switch was going (in a stub, if that
    is an unstarted greenlet: it dies and the error climbs, as in Rust), and
    greenlet removes the tracer (reinstall_tracer() puts the driver's back).
    """
    if TRACE_PANIC:
        tag = TRACE_PANIC.pop()
        TRACING[0] = False
        raise Panic(tag)


def settle():
    """The rest of mapping M1 (KillUntilDead), where Python prints nothing.

    Python's dealloc also gives up, silently, when the greenlet it threw
    GreenletExit into is still alive but referenced again ("resurrected"):
    for instance because, while exiting, it dropped the last reference to
    another suspended greenlet, whose own kill made it that greenlet's
    parent for a while, and that greenlet swallowed the exit in turn and
    switched away. Rust's drop goes on throwing. Called each time Python code
    resumes in a greenlet that may have been killing one (right after a
    switch, a throw, a table store or a parent change), this finishes the
    kills the current greenlet started, as Rust would have before going on.
    """
    if not VICTIMS:
        return
    i = 0
    while i < len(VICTIMS):
        victim, killer = VICTIMS[i]
        if not bool(victim()):
            del VICTIMS[i]
        elif killer() is getcurrent():
            del VICTIMS[i]
            kill_like_rust(victim)
            i = 0
        else:
            i += 1


def kill_like_rust(victim):
    """Throws GreenletExit at the greenlet `victim` (a weak reference) until
    it is dead, with the current greenlet as its parent meanwhile.

    Holds no greenlet in a local variable: an error thrown at the current
    greenlet meanwhile would keep this frame, in its traceback, for as long
    as its thrower is suspended with the error on its stack.
    """
    while bool(victim()):
        HELD.append(victim().parent)  # as Python's ParentIsCurrentGuard does
        victim().parent = getcurrent()
        try:
            EXPLICIT_THROW[0] = True
            victim().throw(GreenletExit)
        except BaseException:
            pass
        EXPLICIT_THROW[0] = False
        if victim() is None:  # freed as it died (settle's victims)
            HELD.pop()
        else:
            victim().parent = HELD.pop()


def after(main, handler, outcome, last):
    """Applies the handler; returns (end or None, last)."""
    kind = outcome[0]
    if kind == "v":
        return None, outcome
    if kind == "exited":
        # Mapping: Exited is a value (Rust spells it Err(Exited)).
        return None, outcome
    if handler == "p" and not main:
        return ("prop", outcome), last
    return None, last


def interp(c, last):
    main = c == 0
    for op in PROGRAM[c]:
        name = op[0]
        if name == "new":
            new(c, op[1], op[2])
        elif name in ("sw", "th", "tx"):
            j = op[1]
            if not exists(j):
                log(f"g{c} {name} {j} nog")
                continue
            if name == "tx":
                outcome = attempt(name, j, None)
                log(f"g{c} tx {j} -> {show(outcome)}")
                handler = op[2]
            else:
                outcome = attempt(name, j, op[2])
                log(f"g{c} {name} {j} {op[2]} -> {show(outcome)}")
                handler = op[3]
            end, last = after(main, handler, outcome, last)
            if end is not None:
                o = end[1]
                log(f"g{c} end prop {show(o)}")
                if o[0] == "exit":
                    return ("exit",)
                return o
        elif name == "q":
            if exists(op[1]):
                query(c, op[1])
            else:
                log(f"g{c} q {op[1]} nog")
        elif name == "cur":
            log(f"g{c} cur {index_of(getcurrent())}")
        elif name == "del":
            drop(c, op[1])
        elif name == "par":
            set_parent(c, op[1], op[2])
        elif name == "tr":
            log(f"g{c} tr {op[1]}")
            TRACE_PANIC.clear()
            TRACING[0] = op[1] != 0
        elif name == "tp":
            log(f"g{c} tp {op[1]}")
            TRACE_PANIC[:] = [op[1]]
        elif main:
            log(f"g{c} noend")
        elif name == "ret":
            log(f"g{c} end ret {op[1]}")
            return ("ret", op[1])
        elif name == "raise":
            log(f"g{c} end raise {op[1]}")
            return ("raise", op[1])
        elif name == "panic":
            log(f"g{c} end panic {op[1]}")
            return ("panic", op[1])
        elif name == "exit":
            log(f"g{c} end exit")
            return ("exit",)
        elif name == "retlast":
            if last[0] == "exited":
                log(f"g{c} end exited")
                return ("exited",)
            log(f"g{c} end ret {last[1]}")
            return ("ret", last[1])
        else:
            raise AssertionError(op)
    if not main:
        log(f"g{c} end fall {900 + c}")
        return ("ret", 900 + c)
    return None


def run_program(scripts):
    global PROGRAM
    PROGRAM = scripts
    TRACE.clear()
    STARTED.clear()
    FINISHED.clear()
    VICTIMS.clear()
    EXITED.clear()
    STUB[0] = None
    TABLE.clear()
    TABLE.append(getcurrent())
    TABLE.extend([None] * (len(scripts) - 1))
    interp(0, ("v", 0))
    log("cleanup")
    while True:
        live = [k for k in range(1, len(TABLE)) if TABLE[k] is not None]
        if not live:
            break
        drop(0, live[0])
    for k in sorted(STARTED - FINISHED):
        log(f"unfinished g{k}")
    log("done")
    TRACING[0] = False
    TRACE_PANIC.clear()
    reinstall_tracer()
    return list(TRACE)


def main():
    programs_path, traces_path = sys.argv[1], sys.argv[2]
    with open(programs_path) as f:
        programs = parse(f.read())
    gc.disable()
    getcurrent().k = 0
    # Exceptions escaping a greenlet killed by a drop are "unraisable"; a
    # Rust drop does not raise them either (it reports a panic on stderr).
    sys.unraisablehook = lambda unraisable: None
    greenlet_module.settrace(tracer)
    out = []
    real_stderr = sys.stderr
    for seed, scripts in programs:
        sys.stderr = KillUntilDead()
        try:
            trace = run_program(scripts)
        finally:
            sys.stderr = real_stderr
        out.append(f"trace {seed}")
        out.extend(trace)
        out.append("end")
    with open(traces_path, "w") as f:
        f.write("\n".join(out))
        f.write("\n")


if __name__ == "__main__":
    main()
