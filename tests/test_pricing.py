"""Pricer: exact costs for the recorded fixtures, and the cached-rate fast path agreeing
with genai-prices' calc_price on every OpenAI and Anthropic model."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from genai_prices import Usage as GPUsage
from genai_prices import calc_price
from genai_prices import data_snapshot

from usagegate.pricing import PriceOverride, Pricer
from usagegate.records import Usage

M = Decimal(1_000_000)


def _d(x: str) -> Decimal:
    return Decimal(x)


# Usage of each priced fixture (see tests/test_providers.py, which asserts these numbers are
# what usage_from_json / StreamTracker produce), and its cost computed by hand from the
# providers' published per-1M rates.
FIXTURE_COSTS = [
    pytest.param(
        "openai", "gpt-4.1-2025-04-14", Usage(1144, 2, 1024),
        # gpt-4.1: $2 in, $0.50 cached, $8 out
        (1144 - 1024) * _d("2") / M + 1024 * _d("0.5") / M + 2 * _d("8") / M,
        id="openai-chat-json-1+chat-stream-1",
    ),
    pytest.param(
        "openai", "gpt-4.1-2025-04-14", Usage(1144, 3, 1024),
        (1144 - 1024) * _d("2") / M + 1024 * _d("0.5") / M + 3 * _d("8") / M,
        id="openai-responses-json-1",
    ),
    pytest.param(
        "openai", "gpt-4o-mini-2024-07-18", Usage(54, 20, 0),
        # gpt-4o-mini: $0.15 in, $0.075 cached, $0.60 out
        54 * _d("0.15") / M + 20 * _d("0.6") / M,
        id="openai-chat-stream-3",
    ),
    pytest.param(
        "openai", "gpt-5-2025-08-07", Usage(3727, 347, 3200, reasoning_tokens=128),
        # gpt-5: $1.25 in, $0.125 cached, $10 out; reasoning is inside the 347 output tokens
        (3727 - 3200) * _d("1.25") / M + 3200 * _d("0.125") / M + 347 * _d("10") / M,
        id="openai-responses-stream-1",
    ),
    pytest.param(
        "openai", "text-embedding-ada-002-v2", Usage(12, 0),
        # ada-002: $0.10 in
        12 * _d("0.1") / M,
        id="openai-embeddings-json-1",
    ),
    pytest.param(
        "openai", "gpt-3.5-turbo-0125", Usage(11, 16, source="estimated"),
        # gpt-3.5-turbo-0125: $0.50 in, $1.50 out (estimated tokens are priced the same way)
        11 * _d("0.5") / M + 16 * _d("1.5") / M,
        id="openai-chat-stream-2-estimated",
    ),
    pytest.param(
        "anthropic", "claude-3-5-sonnet-20240620", Usage(4 + 1163, 187, 0, 1163),
        # claude-3.5-sonnet: $3 in, $3.75 5-minute cache write, $0.30 cache read, $15 out
        4 * _d("3") / M + 1163 * _d("3.75") / M + 187 * _d("15") / M,
        id="anthropic-messages-json-1",
    ),
    pytest.param(
        "anthropic", "claude-3-5-sonnet-20240620", Usage(4 + 1165, 221, 1165),
        4 * _d("3") / M + 1165 * _d("0.3") / M + 221 * _d("15") / M,
        id="anthropic-messages-stream-2",
    ),
    pytest.param(
        "anthropic", "claude-haiku-4-5-20251001", Usage(10, 4),
        # claude-haiku-4.5: $1 in, $5 out
        10 * _d("1") / M + 4 * _d("5") / M,
        id="anthropic-messages-stream-1",
    ),
]


@pytest.mark.parametrize(("provider", "model", "usage", "expected"), FIXTURE_COSTS)
def test_fixture_costs_match_published_rates(provider: str, model: str, usage: Usage, expected: Decimal) -> None:
    cost = Pricer().cost(provider, model, usage, status=200)
    assert cost == expected.quantize(Decimal("1e-9"))
    assert cost is not None and cost.as_tuple().exponent == -9


def test_one_hour_cache_writes_at_the_one_hour_rate() -> None:
    # claude-3.5-sonnet: 5m writes $3.75, 1h writes $6 per 1M.
    usage = Usage(prompt_tokens=10 + 3000, completion_tokens=0, cache_write_tokens=3000, cache_write_1h_tokens=1000)
    expected = 10 * _d("3") / M + 2000 * _d("3.75") / M + 1000 * _d("6") / M
    assert Pricer().cost("anthropic", "claude-3-5-sonnet-20240620", usage, status=200) == expected


def test_unknown_model_is_none_not_zero() -> None:
    pricer = Pricer()
    assert pricer.cost("openai", "no-such-model-xyz", Usage(10, 10), status=200) is None
    assert pricer.cost("openai", None, Usage(10, 10), status=200) is None
    assert pricer.cost("no-such-provider", "gpt-4o", Usage(10, 10), status=200) is None
    assert pricer.has_price("openai", "no-such-model-xyz") is False
    assert pricer.has_price("openai", "gpt-4o-mini") is True


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 502])
def test_errors_are_not_billed(status: int) -> None:
    assert Pricer().cost("openai", "gpt-4o-mini", Usage(100, 100), status=status) == Decimal(0)


@pytest.mark.parametrize("status", [502, 504])
def test_an_answer_the_upstream_broke_off_is_billed_when_marked(status: int) -> None:
    # The upstream answered 200, streamed, then died: the record's tokens were produced and billed.
    usage = Usage(1000, 1000)
    assert Pricer().cost("openai", "gpt-4o-mini", usage, status=status, billed=True) == Decimal("0.000750000")
    assert Pricer().cost("openai", "gpt-4o-mini", usage, status=status) == Decimal(0)


def test_client_disconnect_is_billed() -> None:
    # 499: the client went away mid-stream; the provider still bills what it generated.
    cost = Pricer().cost("openai", "gpt-4o-mini", Usage(1000, 1000), status=499)
    assert cost == Decimal("0.000750000")
    # No tokens: it left before the request was forwarded. Free, even with no model to price.
    assert Pricer().cost("openai", "gpt-4o-mini", Usage(), status=499) == Decimal(0)
    assert Pricer().cost("openai", "", Usage(), status=499) == Decimal(0)


def test_override_takes_precedence_and_cache_rates_fall_back_to_input() -> None:
    pricer = Pricer()
    override = PriceOverride(input_mtok=_d("1"), output_mtok=_d("2"))
    usage = Usage(prompt_tokens=1000, completion_tokens=500, cache_read_tokens=200, cache_write_tokens=100)
    # No cache rates: every input token at $1.
    assert pricer.cost("openai", "gpt-4o-mini", usage, status=200, override=override) == Decimal("0.002000000")
    with_cache = PriceOverride(_d("1"), _d("2"), cache_read_mtok=_d("0.1"), cache_write_mtok=_d("1.25"))
    expected = 700 * _d("1") / M + 200 * _d("0.1") / M + 100 * _d("1.25") / M + 500 * _d("2") / M
    assert pricer.cost("openai", "gpt-4o-mini", usage, status=200, override=with_cache) == expected
    # An override prices a model genai-prices does not know.
    assert pricer.cost("openai", "my-finetune", usage, status=200, override=override) == Decimal("0.002000000")


def test_rounds_half_even_to_nine_places() -> None:
    pricer = Pricer()
    # 1 token at $0.0025/1M = 2.5e-9 USD -> 2e-9 (half-up would give 3e-9); 0.0035 -> 4e-9.
    assert pricer.cost("x", "m", Usage(1, 0), status=200, override=PriceOverride(_d("0.0025"), _d("0"))) == Decimal(
        "0.000000002"
    )
    assert pricer.cost("x", "m", Usage(1, 0), status=200, override=PriceOverride(_d("0.0035"), _d("0"))) == Decimal(
        "0.000000004"
    )


def test_inconsistent_usage_is_priced_not_raised() -> None:
    # Cache reads larger than the prompt (a misbehaving upstream) must not crash the writer.
    cost = Pricer().cost("openai", "gpt-4o-mini", Usage(prompt_tokens=10, completion_tokens=0, cache_read_tokens=50), status=200)
    assert cost == (50 * _d("0.075") / M).quantize(Decimal("1e-9"))


def test_limits() -> None:
    pricer = Pricer()
    assert pricer.context_window("openai", "gpt-4o-mini") == 128000
    assert pricer.context_window("openai", "no-such-model-xyz") is None
    # genai-prices publishes no output limits.
    assert pricer.max_output_tokens("openai", "gpt-4o-mini") is None


def _models() -> list[tuple[str, str]]:
    providers = data_snapshot.get_snapshot().providers
    return [(p.id, m.id) for p in providers if p.id in ("openai", "anthropic") for m in p.models]


def _usages(rng: random.Random) -> list[Usage]:
    usages = [Usage(0, 0), Usage(1, 1), Usage(250_000, 1000, 100_000, 50_000, 20_000)]
    for _ in range(12):
        prompt = rng.choice([rng.randint(0, 5000), rng.randint(0, 400_000)])
        read = rng.randint(0, prompt)
        write = rng.randint(0, prompt - read)
        usages.append(
            Usage(prompt, rng.randint(0, 20_000), read, write, rng.randint(0, write), reasoning_tokens=0)
        )
    return usages


@pytest.mark.parametrize(("provider", "model"), _models(), ids=lambda v: str(v))
def test_cached_rates_equal_calc_price(provider: str, model: str) -> None:
    pricer = Pricer()
    rng = random.Random(f"{provider}/{model}")
    for usage in _usages(rng):
        ours = pricer.cost(provider, model, usage, status=200)
        try:
            calculation = calc_price(
                GPUsage(
                    input_tokens=usage.prompt_tokens,
                    cache_read_tokens=usage.cache_read_tokens,
                    cache_write_tokens=usage.cache_write_tokens,
                    cache_write_1h_tokens=usage.cache_write_1h_tokens,
                    output_tokens=usage.completion_tokens,
                ),
                model,
                provider_id=provider,
            )
        except LookupError:  # a few model ids do not match their own patterns (e.g. "ft:gpt-4o")
            assert ours is None
            continue
        reference = calculation.total_price.quantize(Decimal("1e-9"))
        assert ours == reference, (usage, ours, reference)


def test_fast_path_is_used_for_plain_prices() -> None:
    pricer = Pricer()
    pricer.cost("openai", "gpt-4o-mini", Usage(1, 1), status=200)
    entry = pricer._entries[("openai", "gpt-4o-mini")]
    assert entry is not None and entry.rates is not None
