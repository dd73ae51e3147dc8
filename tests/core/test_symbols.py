from collector.core.symbols import has_globs, is_glob, select, shrunk

LISTING = ("btcusd", "ethusd", "ethbtc", "solusd", "btcgusdperp", "ethgusdperp")


def test_exact_only_needs_no_listing():
    assert not has_globs(["BTCUSD", "ETHUSD"])
    assert select((), ["BTCUSD", "ETHUSD"], ()) == ("BTCUSD", "ETHUSD")


def test_globs_match_listed_symbols_upper_case():
    assert is_glob("*") and is_glob("BTC?") and is_glob("[AB]X") and not is_glob("BTCUSD")
    assert select(LISTING, ["*"]) == ("BTCUSD", "ETHUSD", "ETHBTC", "SOLUSD", "BTCGUSDPERP", "ETHGUSDPERP")
    assert select(LISTING, ["*USD"]) == ("BTCUSD", "ETHUSD", "SOLUSD")
    assert select(LISTING, ["ETH???", "[BS]*USD"]) == ("ETHUSD", "ETHBTC", "BTCUSD", "SOLUSD")
    assert select(LISTING, ["[!E]*USD"]) == ("BTCUSD", "SOLUSD")


def test_exclude_after_matching_and_exact_kept_unlisted():
    assert select(LISTING, ["*"], ["*PERP", "ETH*"]) == ("BTCUSD", "SOLUSD")
    # an exact entry is kept listed or not, once, in the order given
    assert select(LISTING, ["DOGEUSD", "*USD", "BTCUSD"]) == ("DOGEUSD", "BTCUSD", "ETHUSD", "SOLUSD")
    assert select(LISTING, ["DOGEUSD"], ["DOGE*"]) == ()
    assert select((), ["*"]) == ()


def test_shrunk_is_more_than_half_gone():
    old = ["A", "B", "C", "D"]
    assert not shrunk(old, ["A", "B"])  # half gone: accepted
    assert shrunk(old, ["A"])
    assert shrunk(old, [])
    assert not shrunk(old, old + ["E"])
    assert not shrunk([], ["A"])
