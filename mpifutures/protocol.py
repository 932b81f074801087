"""The messages that ranks exchange: small tuples whose first item is an opcode.

Tuples pickle several times faster than records, and thousands travel per second.

scheduler → worker
    ``(RUN, key, fn_token, fn_bytes, args, deps, priority, attempt)``  run a task; ``deps``
    gives each input as ``(key, rank to fetch it from, oldest version that will do)`` (the
    worker itself: wait for it locally); ``attempt`` numbers this dispatch, comes back with
    the outcome, and is the version of the value it computes (see :mod:`~mpifutures.state`)
    ``(FREE, keys)``   drop these keys; an item ``(key, version)`` spares a copy whose
    version is above it (a newer value, which may overtake the FREE on another path)
    ``(CANCEL, keys)``   do not run these tasks
    ``(RECALL, items)``  give these tasks back, each ``(key, attempt)``, unless a compute
    thread has taken it (which then runs and reports as usual); one given back is reported
    DROPPED
    ``(STORE, key, payload, forward, copy)``  keep a value sent by the client (scatter number
    ``copy``) and pass it on to the ranks in ``forward`` (a binary tree: log2(N) steps)
    ``(STOP,)``   leave the loop
    ``(CALL, call_id, token, fn_bytes, args)``  run a function now, reply with ``CALLED``
    ``(PEERS, {rank: pid})``  the other ranks on this worker's machine, to watch
    (:mod:`~mpifutures.liveness`)
worker → scheduler
    ``(DONE, key, attempt, nbytes, inline_payload_or_None, fetched_bytes, seconds_run)``
    ``(FAILED, key, attempt, error)``   ``(STOPPED, stats)``   ``(CALLED, call_id, ok, payload)``
    ``(DROPPED, key, attempt, freed)``  a cancelled or recalled task has left this worker: it
    did not run, or (cancelled) its run has ended and the outcome is dropped; each cancelled
    or recalled attempt ends in exactly one of DONE, FAILED or DROPPED, so rank 0 knows when
    the worker is free again; ``freed``: a compute thread had taken it
    ``(STORED, key, version)``  this worker now keeps a copy of ``key`` (scattered to it, or
    fetched) of that version
    ``(RECORDS, records)``  task-stream records
    ``(HELLO, host_name, pid, machine)``  a worker's first message (``machine``: see
    :func:`mpifutures.liveness.machine`)
    ``(LOST, rank, pid)``  a rank this worker watched has died
any rank → any worker, and back
    ``(GET, key, version)`` → ``(DATA, key, payload, its version)`` if the rank holds that
    version of ``key`` or a newer one, else ``(MISSING, key, reason, version)``
"""

RUN = 1
FREE = 2
CANCEL = 3
STORE = 4
RECALL = 5
STOP = 6
CALL = 7
DONE = 10
FAILED = 11
STOPPED = 12
CALLED = 13
RECORDS = 14
STORED = 15
HELLO = 16
PEERS = 8
LOST = 17
DROPPED = 18
GET = 20
DATA = 21
MISSING = 22


def append_key(msgs: list, op: int, key: object) -> None:
    """Add ``key`` to the last of ``msgs`` if it is an ``op`` list (FREE, CANCEL, RECALL),
    else start one: a run of frees, cancels or recalls to one rank travels as one message."""
    if msgs and msgs[-1][0] == op:
        msgs[-1][1].append(key)
    else:
        msgs.append((op, [key]))
