"""Fuzzing the server's request path: random msgpack (any structure, forged ndarray maps, random bytes)
is answered with a reply or a "400 Bad Request" line — never a 500, an exception or a crash."""

from __future__ import annotations

import threading

import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from latbot.serve.server import PolicyServer
from latbot.serve.wire import pack
from tests.fuzz_settings import fast, slow
from tests.test_reliability import bad_inputs

leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(),
    st.text(max_size=30),
    st.binary(max_size=40),
)
forged = st.fixed_dictionaries(
    {
        b"__ndarray__": st.just(True),
        b"data": st.binary(max_size=64),
        b"dtype": st.sampled_from(["<f4", ">f4", "|u1", "<i8", "|b1", "<f2", "|O", "<U3", "V8", "x"]),
        b"shape": st.lists(st.integers(min_value=-2, max_value=70), max_size=4),
    }
)
value = st.recursive(
    leaf | forged, lambda c: st.lists(c, max_size=4) | st.dictionaries(leaf, c, max_size=4), max_leaves=20
)
images = st.dictionaries(
    st.sampled_from(["corner", "side", "x"]),
    st.builds(
        lambda h, w, dt: np.zeros((h, w, 3), dt),
        st.integers(1, 80),
        st.integers(1, 80),
        st.sampled_from([np.uint8, np.float32, ">u2"]),
    ),
    max_size=2,
)
states = st.one_of(
    st.builds(
        lambda n, dt, v: np.full(n, v).astype(dt),
        st.integers(0, 6),
        st.sampled_from(["<f4", "<f8", ">f4", "<f2", "<i8", "|b1"]),
        st.floats(width=32),
    ),
    st.lists(st.floats(), max_size=5),
    value,
)
observations = st.fixed_dictionaries(
    {},
    optional={
        "images": images | value,
        "state": states,
        "instruction": st.text(max_size=50) | value,
        "prompt": value,
        "extra": value,
    },
)


@pytest.fixture(scope="module")
def server():
    s = PolicyServer.__new__(PolicyServer)
    s.__dict__.update(bad_inputs._server_state())
    return s


def check(server, message: bytes) -> None:
    reply = server.answer(message)
    assert isinstance(reply, bytes) or reply.startswith("400 Bad Request: "), reply


def packed(obj) -> bytes:
    try:
        return pack(obj)
    except Exception:
        return msgpack.packb(obj, default=repr)


@fast(60)
@given(observations)
def test_random_observations(server, obs):
    check(server, packed(obs))


@fast(60)
@given(value)
def test_random_msgpack(server, obj):
    check(server, packed(obj))


@fast(40)
@given(st.binary(max_size=200))
def test_random_bytes(server, data):
    check(server, data)


@pytest.mark.slow
@slow(4000)
@given(observations)
def test_random_observations_many(server, obs):
    check(server, packed(obs))


@pytest.mark.slow
@slow(4000)
@given(value)
def test_random_msgpack_many(server, obj):
    check(server, packed(obj))


@pytest.mark.slow
@slow(4000)
@given(st.binary(max_size=2000))
def test_random_bytes_many(server, data):
    check(server, data)


def test_live_server_survives_garbage_and_keeps_serving():
    from websockets.sync.client import connect

    server = PolicyServer(bad_inputs.stub_policy(), port=0, max_connections=2)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with connect(f"ws://127.0.0.1:{server.port}") as ws:
            ws.recv()
            for data in (b"\xc1", b"\x91" * 1000, msgpack.packb({"images": 1})):
                ws.send(data)
                assert ws.recv().startswith("400 Bad Request")
            ws.send(pack(bad_inputs.good_observation()))
            assert isinstance(ws.recv(), bytes)
    finally:
        server.shutdown()
