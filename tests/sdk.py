"""The official OpenAI and Anthropic SDKs pointed at a gateway under test.

Each test module passes its own provider key, so a test can prove that key never reaches the
store; `max_retries=0` so an SDK retry never hides (or doubles) a request the test counts.
"""

from __future__ import annotations

import anthropic
import openai

from tests.servers import GatewayProcess


def openai_client(gateway: GatewayProcess, key: str, provider_key: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=provider_key, max_retries=0,
                         default_headers={"Helicone-Auth": f"Bearer {key}", **headers})


def anthropic_client(gateway: GatewayProcess, key: str, provider_key: str, **headers: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url + "/anthropic", api_key=provider_key, max_retries=0,
                               default_headers={"Helicone-Auth": f"Bearer {key}", **headers})
