"""A fast, deterministic OpenAI + Anthropic compatible upstream for tests, the demo and the bench.

Map of the module:

- `serve(host, port)` / `python -m usagegate.mock_upstream --port N`: run until SIGINT/SIGTERM.
- `MockUpstream`: the state (a bounded log of received requests) and the router that turns one
  parsed `Request` into a `Reply`; `MockUpstream.start(host, port)` serves it on the running loop.
- `_Connection`: a raw `asyncio.Protocol` speaking HTTP/1.1 with httptools (keep-alive,
  pipelining, Content-Length bodies, chunked SSE streams). No framework: this server is the
  baseline the benchmark divides by, so it has to be at least as fast as a minimal asyncio server.
- The `_openai_*` / `_anthropic_*` builders: response bodies and SSE events in the real APIs' shapes.

Determinism: the answer text is picked from a hash of the request body with `stream` and
`stream_options` removed, so the streamed and non-streamed forms of one request carry the same
text and the same usage. Prompt tokens are `ceil(len(input text) / 4)` (at least 1); completion
tokens are the number of text pieces emitted (one word per piece).

Request headers that change the answer (names are case-insensitive):

- `X-Mock-Status: N`           reply with status N and a provider-shaped error (429 adds retry-after: 1)
- `X-Mock-Delay-Ms: N`         wait N ms before replying (other connections are not blocked)
- `X-Mock-Break-After: N`      streams: send N events then drop the connection mid-body;
                               non-streams: send the head and half the body, then drop it
- `X-Mock-Chunk-Delay-Ms: N`   streams: wait N ms between events (for time-to-first-token tests)
- `X-Mock-Cached-Tokens: N`    report N cached / cache-read prompt tokens (capped at the prompt)
- `X-Mock-Cache-Creation-Tokens: N`  Anthropic: report N cache-write tokens
- `X-Mock-Reasoning-Tokens: N` OpenAI: report N reasoning tokens, counted in the completion tokens
- `X-Mock-Set-Cookie: N`       add `Set-Cookie: mock_session=N; Path=/` to the answer

Introspection: `GET /_mock/requests` lists the last 200 requests (method, path, query, headers
with lowercase names, body as text, and `closed_early`: the client closed the connection while a
delayed or paced reply was still pending); `DELETE /_mock/requests` clears the list.
"""

from __future__ import annotations

from usagegate.mock.server import MockUpstream, main, serve

__all__ = ["MockUpstream", "main", "serve"]
