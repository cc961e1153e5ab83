"""Python greenlet and gevent workloads for greenlet-bench.

Run by the Rust binary's `report` (through bench/run) with the virtual
environment's interpreter, one process per measurement. Reports in the line
format of bench/src/harness.rs:

    result id=switch/python-greenlet unit=ns median=... min=... max=... runs=7 iters=...

Usage:
    bench.py list
    bench.py versions
    bench.py time ID [--target-ms MS] [--runs N]
    bench.py mem COUNT

The timing mirrors bench/src/harness.rs: calibrate the iteration count so a
run lasts about the target time, warm-up runs, then the runs; each figure
is nanoseconds per iteration, and the line gives their median, min and max.
"""

import gc
import os
import platform
import statistics
import sys
import time

import greenlet


def switch(n):
    """Round trip: main switches to a greenlet that switches straight back."""
    main = greenlet.getcurrent()

    def loop():
        back = main.switch  # bound once, as `sw` is below
        while True:
            back()

    g = greenlet.greenlet(loop)
    g.switch()
    sw = g.switch
    start = time.perf_counter_ns()
    for _ in range(n):
        sw()
    elapsed = time.perf_counter_ns() - start
    del g  # GreenletExit
    return elapsed


def create(n):
    """Create, run to completion (it returns at once) and drop a greenlet."""
    new = greenlet.greenlet

    def empty():
        pass

    start = time.perf_counter_ns()
    for _ in range(n):
        new(empty).switch()
    return time.perf_counter_ns() - start


def drop_suspended(n):
    """Create, switch in (it switches back), drop: GreenletExit runs in it."""
    main = greenlet.getcurrent()
    new = greenlet.greenlet

    def wait():
        main.switch()

    start = time.perf_counter_ns()
    for _ in range(n):
        g = new(wait)
        g.switch()
        del g
    return time.perf_counter_ns() - start


def gevent_spawn_join(n):
    """gevent.spawn of an empty function, then join it."""
    import gevent

    spawn = gevent.spawn

    def empty():
        pass

    spawn(empty).join()  # the hub exists before the clock starts
    start = time.perf_counter_ns()
    for _ in range(n):
        spawn(empty).join()
    return time.perf_counter_ns() - start


def gevent_sleep0(n):
    """gevent.sleep(0) from the main greenlet: to the hub and back."""
    import gevent

    sleep = gevent.sleep
    sleep(0)  # the hub exists before the clock starts
    start = time.perf_counter_ns()
    for _ in range(n):
        sleep(0)
    return time.perf_counter_ns() - start


def gevent_sleep0_pair(n):
    """main and a greenlet alternate gevent.sleep(0), each through the hub."""
    import gevent

    sleep = gevent.sleep

    def other():
        for _ in range(n):
            sleep(0)

    g = gevent.spawn(other)
    sleep(0)  # it starts and yields before the clock starts
    start = time.perf_counter_ns()
    for _ in range(n):
        sleep(0)
    elapsed = time.perf_counter_ns() - start
    g.join()
    return elapsed


WORKLOADS = {
    "switch/python-greenlet": (switch, "`g.switch()` ping-pong with a greenlet that loops `main.switch()` (both bound once)"),
    "create/python-greenlet": (create, "`greenlet(empty).switch()`"),
    "create/gevent": (gevent_spawn_join, "`gevent.spawn(empty).join()`"),
    "hub-sleep0/gevent": (gevent_sleep0, "`gevent.sleep(0)` from main: to the hub and back"),
    "hub-sleep0-pair/gevent": (gevent_sleep0_pair, "main and a greenlet alternate `gevent.sleep(0)` (two calls a round)"),
    "hub-spawn-join/gevent": (gevent_spawn_join, "`gevent.spawn(empty).join()`"),
    "drop-suspended/python-greenlet": (drop_suspended, "new, `switch()` in (it switches back), `del`: GreenletExit"),
}


def measure(timed, target_ns, runs):
    timed(1)  # first use pays one-time costs (gevent's hub) that would fool the calibration
    floor = target_ns // 20
    n = 1
    while True:
        elapsed = timed(n)
        if elapsed >= floor:
            break
        n *= 8 if elapsed < floor // 8 else 2
    n = max(1, int(n * target_ns / max(elapsed, 1)))
    warm = timed(n)  # warm-up at full length, and a last correction of the count
    n = max(1, int(n * target_ns / max(warm, 1)))
    return n, [timed(n) / n for _ in range(runs)]


def line(id_, **fields):
    parts = ["result", "id=" + id_]
    for key, value in fields.items():
        value = str(value).replace('"', "'").replace("\n", " ")
        parts.append(f'{key}="{value}"' if (" " in value or not value) else f"{key}={value}")
    print(" ".join(parts), flush=True)


def resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def mem(count):
    """Resident bytes per suspended greenlet, `count` of them alive."""
    main = greenlet.getcurrent()

    def wait():
        main.switch()

    warm = greenlet.greenlet(wait)
    warm.switch()
    del warm
    alive = [None] * count
    gc.collect()
    before = resident_bytes()
    started = time.perf_counter()
    for i in range(count):
        g = greenlet.greenlet(wait)
        g.switch()
        alive[i] = g
    elapsed = time.perf_counter() - started
    after = resident_bytes()
    per = (after - before) / count
    line(f"mem-{count}/python-greenlet", unit="bytes", median=f"{per:.0f}", min=f"{per:.0f}",
         max=f"{per:.0f}", runs=1, requested=count, reached=count, rss_before=before, rss_after=after,
         create_start_ns=f"{elapsed * 1e9 / count:.0f}")


def versions():
    import gevent

    line("version/python", value=platform.python_version(), implementation=platform.python_implementation())
    line("version/greenlet", value=greenlet.__version__)
    line("version/gevent", value=gevent.__version__)


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "list":
        for id_, (_, what) in WORKLOADS.items():
            print(f"{id_}\t{what}")
        return 0
    if command == "versions":
        versions()
        return 0
    if command == "mem":
        mem(int(rest[0]))
        return 0
    if command == "time":
        id_ = rest[0]
        target_ms, runs = 200, 7
        i = 1
        while i < len(rest):
            if rest[i] == "--target-ms":
                target_ms = int(rest[i + 1])
            elif rest[i] == "--runs":
                runs = int(rest[i + 1])
            else:
                raise SystemExit(f"unknown option {rest[i]!r}")
            i += 2
        timed, what = WORKLOADS[id_]
        n, per = measure(timed, target_ms * 1_000_000, runs)
        line(id_, unit="ns", median=f"{statistics.median(per):.3f}", min=f"{min(per):.3f}",
             max=f"{max(per):.3f}", runs=runs, iters=n, what=what)
        return 0
    raise SystemExit(f"unknown command {command!r}; see --help")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
