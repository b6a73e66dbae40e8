"""The in-process transport keeps RabbitMQ's semantics where services depend on them."""

import pytest

from novalite.bus import Bus, NotJSONError, make_transport
from novalite.bus.client import check_plain_json
from novalite.context import RequestContext


def test_plain_json_check_names_the_offender():
    check_plain_json({"a": [1, 2.5, "x", None, True, {"b": {}}]})
    with pytest.raises(NotJSONError, match=r"\$\.a\[1\] is a set"):
        check_plain_json({"a": [1, {2}]})
    with pytest.raises(NotJSONError, match="non-string key"):
        check_plain_json({1: "x"})
    with pytest.raises(NotJSONError, match="nan"):
        check_plain_json({"x": float("nan")})


async def test_request_id_travels_with_the_message():
    bus = Bus(make_transport("memory://"))
    seen = []

    class Endpoint:
        async def echo(self, ctx, value):
            seen.append(ctx.request_id)
            return value

    await bus.serve("t", Endpoint())
    ctx = RequestContext(request_id="req-abc")
    assert await bus.call(ctx, "t", "echo", value={"k": [1]}) == {"k": [1]}
    assert seen == ["req-abc"]
    with pytest.raises(NotJSONError):
        await bus.cast(ctx, "t", "echo", value=object())
    await bus.close()
