"""Property-based tests for Helicone header parsing: it accepts what DESIGN §1 allows, refuses the
rest with a BadRequest naming the header, and never fails any other way."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from usagegate.errors import BadRequest
from usagegate.identity import MAX_PROPERTY_VALUE, MAX_USER_ID, parse_helicone_headers

header_names = st.sampled_from(
    [b"helicone-auth", b"helicone-user-id", b"helicone-request-id", b"helicone-property-plan",
     b"helicone-property-", b"helicone-session-id", b"helicone-omit-request", b"helicone-target-url",
     b"helicone-ratelimit-policy", b"helicone-cache-enabled", b"authorization", b"x-other"]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(header_names, st.binary(max_size=1500)), max_size=8))
def test_parsing_never_fails_except_with_a_bad_request(headers: list[tuple[bytes, bytes]]) -> None:
    try:
        ident = parse_helicone_headers(headers)
    except BadRequest as error:
        assert error.status == 400 and error.param and error.message
        return
    if ident.user_id is not None:
        assert 0 < len(ident.user_id) <= MAX_USER_ID and ident.user_id == ident.user_id.strip()
    for name, value in ident.properties.items():
        assert name == name.lower() and len(value) <= MAX_PROPERTY_VALUE
    if ident.request_id is not None:
        assert str(uuid.UUID(ident.request_id)) == ident.request_id


printable = st.text(st.characters(min_codepoint=32, max_codepoint=0x10FFFF, blacklist_categories=("Cs",),
                                  blacklist_characters="\x7f"), min_size=1, max_size=MAX_USER_ID).filter(lambda s: s.strip())


@settings(max_examples=300, deadline=None)
@given(printable)
def test_any_printable_user_id_round_trips_trimmed(user: str) -> None:
    ident = parse_helicone_headers([(b"helicone-user-id", user.encode("utf-8"))])
    assert ident.user_id == user.strip()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_0123456789", min_size=1, max_size=40),
       st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=MAX_PROPERTY_VALUE))
def test_property_names_are_lowercased_and_values_kept(name: str, value: str) -> None:
    ident = parse_helicone_headers([(b"helicone-property-" + name.lower().encode(), value.encode())])
    assert ident.properties == {name.lower(): value.strip()}


def test_header_user_over_limit_and_control_chars_are_refused() -> None:
    for bad in ("u" * (MAX_USER_ID + 1), "a\tb", "x\x00y"):
        try:
            parse_helicone_headers([(b"helicone-user-id", bad.encode())])
        except BadRequest as error:
            assert error.param == "Helicone-User-Id"
        else:
            raise AssertionError(f"{bad!r} was accepted")


def test_omit_and_session_headers() -> None:
    ident = parse_helicone_headers([
        (b"helicone-omit-request", b"true"), (b"helicone-omit-response", b"TRUE"),
        (b"helicone-session-id", b" s-1 "), (b"helicone-session-path", b"/a/b"), (b"helicone-session-name", b"n"),
        (b"helicone-auth", b"Bearer ug_abc"),
    ])
    assert ident.omit_request and ident.omit_response
    assert (ident.session_id, ident.session_path, ident.session_name) == ("s-1", "/a/b", "n")
    assert ident.auth == "ug_abc"


def test_request_ids_are_distinct_version_4_uuids() -> None:
    from usagegate.identity import RequestIds

    new_id = RequestIds(batch=3)  # a small batch so the refill path runs many times
    ids = [new_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == value
