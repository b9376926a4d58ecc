"""`latbot serve`: a policy server for robots, speaking openpi's websocket protocol (msgpack + numpy),
and a small client. See docs/serving.md for the wire format."""
