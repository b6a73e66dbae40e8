"""Microversion negotiation, as Nova does it."""

import pytest

from novalite.api.compute.microversions import MAX, MIN, Microversion, negotiate, requested_version
from novalite.api.errors import ApiError, BadRequest


def test_no_header_means_minimum_and_latest_maximum():
    assert negotiate(None) == MIN == Microversion(2, 1)
    assert negotiate("latest") == MAX == Microversion(2, 100)


def test_out_of_range_is_406_and_malformed_is_400():
    with pytest.raises(ApiError) as err:
        negotiate("2.101")
    assert err.value.status == 406 and "maximum is 2.100" in err.value.message
    with pytest.raises(BadRequest):
        negotiate("2.x")
    with pytest.raises(ApiError):
        negotiate("3.0")


def test_headers_new_and_legacy():
    assert requested_version({"OpenStack-API-Version": "compute 2.60"}) == "2.60"
    assert requested_version({"OpenStack-API-Version": "image 2.1, compute 2.7"}) == "2.7"
    assert requested_version({"X-OpenStack-Nova-API-Version": "2.3"}) == "2.3"
    assert requested_version({}) is None


def test_comparisons():
    v = Microversion(2, 47)
    assert v.at_least("2.47") and v.at_least("2.9") and v.below("2.48")
    assert Microversion(2, 100) > Microversion(2, 99)
