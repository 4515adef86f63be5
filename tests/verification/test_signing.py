"""The receipt signer pool: signatures like the key's own, in order, and recovery from a dead
signer process."""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool

from sandbox.keys.signing import generate_key
from sandbox.verification.signer import CHUNK, Signer


def test_the_pool_signs_in_order_and_recovers_from_a_dead_worker() -> None:
    key = generate_key()
    public = key.public_key()
    signer = Signer(key, processes=2)
    messages = [f"receipt {i}".encode() for i in range(CHUNK + 7)]
    try:
        signatures = signer.submit(messages).result(timeout=120)
        assert len(signatures) == len(messages)
        for message, signature in zip(messages, signatures, strict=True):
            public.verify(signature, message)  # raises if wrong
        assert signer.submit(messages[:3]).result() == [key.sign(m) for m in messages[:3]]

        pool = signer._pool
        assert pool is not None
        for process in list(pool._processes.values()):  # the pool's own children
            process.kill()
        try:  # a broken pool fails the job, or (noticed at submit) the job is signed here
            assert signer.submit(messages).result(timeout=120) == signatures
        except BrokenProcessPool:
            signer.failed()  # what the verification service does
        again = signer.submit(messages).result(timeout=120)
        assert again == signatures  # Ed25519 is deterministic
        assert signer._pool is not None and signer._pool is not pool  # a fresh pool
    finally:
        signer.close()
    # closed: large jobs are signed in-process
    assert signer.submit(messages[:CHUNK]).result() == signatures[:CHUNK]


def test_no_processes_means_in_process() -> None:
    key = generate_key()
    signer = Signer(key, processes=0)
    messages = [b"x"] * (CHUNK * 2)
    assert signer.submit(messages).result() == [key.sign(b"x")] * (CHUNK * 2)
    assert signer._pool is None
