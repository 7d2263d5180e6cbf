"""The reasoning layer: one protocol, an LLM over the OpenAI-compatible API and an offline rule reasoner."""
