"""Unit tests for flashsrv.negotiation: choosing a precompressed sibling, no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashsrv.negotiation import IDENTITY, choose_encoding

BOTH = ("br", "gzip")
ALL = ("br", "zstd", "gzip")  # the server's order (flashsrv.responder.ENCODING_PREFERENCE)


def test_absent_header_gives_identity() -> None:
    assert choose_encoding(None, BOTH) == IDENTITY == "identity"


def test_empty_header_gives_identity() -> None:
    assert choose_encoding("", BOTH) == "identity"


def test_blank_header_gives_identity() -> None:
    assert choose_encoding("  ,  ", BOTH) == "identity"


def test_nothing_available_gives_identity() -> None:
    assert choose_encoding("gzip, br", ()) == "identity"


def test_common_browser_header_prefers_br() -> None:
    assert choose_encoding("gzip, deflate, br", BOTH) == "br"


def test_browser_header_with_zstd_prefers_br() -> None:
    assert choose_encoding("gzip, deflate, br, zstd", BOTH) == "br"


def test_common_header_without_br_sibling_gives_gzip() -> None:
    assert choose_encoding("gzip, deflate, br", ("gzip",)) == "gzip"


def test_gzip_only_client_gets_gzip() -> None:
    assert choose_encoding("gzip", BOTH) == "gzip"


def test_unlisted_coding_is_not_sent() -> None:
    assert choose_encoding("deflate", BOTH) == "identity"


def test_higher_q_wins_over_server_preference() -> None:
    assert choose_encoding("br;q=0.5, gzip;q=0.8", BOTH) == "gzip"


def test_tie_is_broken_by_server_preference() -> None:
    assert choose_encoding("gzip;q=0.7, br;q=0.7", BOTH) == "br"


def test_server_order_is_the_available_order() -> None:
    assert choose_encoding("gzip, br", ("gzip", "br")) == "gzip"


def test_q_zero_means_not_acceptable() -> None:
    assert choose_encoding("br;q=0, gzip", BOTH) == "gzip"


def test_all_q_zero_falls_back_to_identity() -> None:
    assert choose_encoding("br;q=0, gzip;q=0", BOTH) == "identity"


def test_star_covers_unlisted_codings() -> None:
    assert choose_encoding("*", BOTH) == "br"


def test_star_does_not_override_explicit_q_zero() -> None:
    assert choose_encoding("br;q=0, *", BOTH) == "gzip"


def test_star_q_zero_with_explicit_coding() -> None:
    assert choose_encoding("gzip, *;q=0", BOTH) == "gzip"


def test_star_q_zero_alone_still_gives_identity_never_406() -> None:
    assert choose_encoding("*;q=0", BOTH) == "identity"


def test_identity_q_zero_alone_still_gives_identity_never_406() -> None:
    assert choose_encoding("identity;q=0", BOTH) == "identity"


def test_identity_q_zero_and_star_q_zero_still_gives_identity() -> None:
    assert choose_encoding("identity;q=0, *;q=0", ("gzip",)) == "identity"


def test_identity_ranked_higher_than_codings_wins() -> None:
    assert choose_encoding("identity, gzip;q=0.5", BOTH) == "identity"


def test_identity_tied_with_coding_loses_to_the_coding() -> None:
    assert choose_encoding("identity, gzip", BOTH) == "gzip"


def test_unranked_identity_does_not_compete_with_a_low_q_coding() -> None:
    assert choose_encoding("gzip;q=0.1", BOTH) == "gzip"


def test_star_ranks_identity_too() -> None:
    assert choose_encoding("gzip;q=0.5, *;q=0.8", ("gzip",)) == "identity"


def test_x_gzip_is_an_alias_for_gzip() -> None:
    assert choose_encoding("x-gzip", BOTH) == "gzip"


def test_x_gzip_q_zero_refuses_gzip() -> None:
    assert choose_encoding("x-gzip;q=0, *", ("gzip",)) == "identity"


def test_coding_names_are_case_insensitive() -> None:
    assert choose_encoding("GZIP, Br", BOTH) == "br"


def test_q_parameter_name_is_case_insensitive() -> None:
    assert choose_encoding("br;Q=0, gzip", BOTH) == "gzip"


def test_whitespace_around_members_and_parameters_is_tolerated() -> None:
    assert choose_encoding(" br ; q=0.2 ,\tgzip ;q=0.9 ", BOTH) == "gzip"


def test_duplicate_coding_keeps_its_lowest_q() -> None:
    assert choose_encoding("br, br;q=0, gzip;q=0.1", BOTH) == "gzip"


def test_unknown_parameters_are_ignored() -> None:
    assert choose_encoding("br;level=5, gzip", BOTH) == "br"


def test_q_with_three_decimals() -> None:
    assert choose_encoding("br;q=0.001, gzip;q=0.002", BOTH) == "gzip"


def test_q_one_point_zero_zero_zero() -> None:
    assert choose_encoding("gzip;q=0.999, br;q=1.000", BOTH) == "br"


@pytest.mark.parametrize(
    "q", ["", "abc", "2", "1.5", "0.5555", "-1", ".5", "0,5", "1.001", "inf", "nan", "0x1"]
)
def test_malformed_q_counts_as_not_acceptable(q: str) -> None:
    assert choose_encoding(f"br;q={q}, gzip;q=0.1", BOTH) == "gzip"


def test_q_without_value_counts_as_not_acceptable() -> None:
    assert choose_encoding("br;q, gzip;q=0.1", BOTH) == "gzip"


# -- zstd among br and gzip -----------------------------------------------------------------------


def test_zstd_only_client_gets_zstd() -> None:
    assert choose_encoding("zstd", ALL) == "zstd"


def test_current_browser_header_prefers_br_over_zstd() -> None:
    assert choose_encoding("gzip, deflate, br, zstd", ALL) == "br"


def test_zstd_wins_the_tie_with_gzip_in_server_order() -> None:
    assert choose_encoding("gzip, zstd", ALL) == "zstd"


def test_without_a_br_variant_the_browser_gets_zstd() -> None:
    assert choose_encoding("gzip, deflate, br, zstd", ("zstd", "gzip")) == "zstd"


def test_client_q_values_beat_the_server_order_for_zstd() -> None:
    assert choose_encoding("gzip;q=1, br;q=0.5, zstd;q=0.5", ALL) == "gzip"
    assert choose_encoding("br;q=0.5, zstd;q=0.6", ALL) == "zstd"


def test_q_zero_refuses_br_and_star_picks_the_next_in_server_order() -> None:
    assert choose_encoding("br;q=0, *", ALL) == "zstd"
    assert choose_encoding("br;q=0, zstd;q=0, *", ALL) == "gzip"


def test_star_q_zero_with_identity_gives_identity() -> None:
    assert choose_encoding("*;q=0, identity", ALL) == "identity"


def test_zstd_listed_without_a_zstd_variant_is_not_sent() -> None:
    assert choose_encoding("zstd", BOTH) == "identity"


def test_repeated_calls_give_the_same_answer() -> None:
    header = "gzip, deflate, br"
    assert {choose_encoding(header, BOTH) for _ in range(3)} == {"br"}
    assert choose_encoding(header, ("gzip",)) == "gzip"  # cache is keyed on availability too


@given(
    st.one_of(st.none(), st.text()),
    st.sampled_from([(), ("br",), ("gzip",), ("zstd",), ("br", "gzip"), ("gzip", "br"), ALL]),
)
def test_choose_encoding_never_raises(header: str | None, available: tuple[str, ...]) -> None:
    assert choose_encoding(header, available) in (*available, "identity")


members = st.builds(
    lambda coding, q: coding + q,
    st.sampled_from(["br", "gzip", "zstd", "x-gzip", "identity", "*", "deflate", "BR",
                     " gzip ", "ZSTD"]),
    st.sampled_from(["", ";q=0", ";q=0.5", ";q=1", ";q=0.25", "; q=0.9", ";q=bad"]),
)


@given(st.lists(members, max_size=8))
def test_chosen_coding_is_never_one_the_client_refused(parts: list[str]) -> None:
    header = ", ".join(parts)
    chosen = choose_encoding(header, ALL)
    if chosen != "identity":
        refused = {
            p.split(";")[0].strip().lower().replace("x-gzip", "gzip")
            for p in parts
            if p.endswith((";q=0", ";q=bad"))
        }
        assert chosen not in refused


@given(st.dictionaries(st.sampled_from(ALL), st.integers(0, 1000), min_size=1))
def test_highest_q_wins_and_ties_follow_the_server_order(weights: dict[str, int]) -> None:
    header = ", ".join(f"{coding};q={q / 1000:.3f}" for coding, q in weights.items())
    best = max(weights.values())
    expected = next(c for c in ALL if weights.get(c) == best) if best else "identity"
    assert choose_encoding(header, ALL) == expected
