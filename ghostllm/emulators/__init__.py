"""Loopback emulators of the providers' native APIs (Anthropic Messages, Gemini,
Ollama, Azure OpenAI), one module each, following each provider's documented wire
format exactly (the official SDKs parse everything they send; tests prove it). They
never import the adapters they check (import-linter).

Run one with `python -m ghostllm.emulators PROVIDER --port N` (each module's
`run(host, port)`). Every emulator follows the same behaviour contract, so one
fidelity matrix can drive them all:

- Reply text: `You said: <last user text>` (`[N image(s)]` appended when the last
  user turn carried images). After a tool result (the last turn is a tool result):
  `Tool said: <result text>`.
- Tools offered and the last turn is the user's: the answer is tool calls, not text,
  unless tool_choice says none. One call to the first tool (or the named one); when
  the user text contains the word "parallel", one call to each offered tool. The
  arguments: every `required` property of the tool's schema set to the string "x"
  (`{}` when none). Call ids: the provider's own style, stable within a response.
- JSON mode / schema asked: the text is `{"answer": "You said: ..."}`.
- Stop sequences: the text is cut before the first one it contains (finish as the
  provider reports a stop sequence).
- max_tokens (or the provider's equivalent) smaller than the answer's word count: cut
  to that many words, finish as the provider reports length.
- Usage: prompt tokens = words in all input text (system included); completion tokens
  = words in the output (a tool call's arguments JSON counts as one word per value).
- Streaming: one event per word; tool-call arguments in at least two fragments; usage
  where the provider puts it in streams.
- Scenario models (the requested model name): `error-400`, `error-401`, `error-404`,
  `error-429` (with `retry-after: 7`), `error-500`, `error-503`, and for Anthropic
  `overloaded` (529); each answered with the provider's native error body.
  `stream-error`: a stream that starts, then carries the provider's in-stream error.
- `GET /_emulator/requests` answers the requests received so far (method, path with
  query, headers lower-cased, JSON body), newest last; `POST /_emulator/reset` clears.
- Model listing at the provider's own path, with the models `<provider>-small` and
  `<provider>-large` (and embeddings models where the provider has embeddings).
"""
