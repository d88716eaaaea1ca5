"""The LLM side: an OpenAI-compatible client with cache, retries and rate limits (`client`), the
packaged local model's server (`server`), the versioned generation prompt (`prompt`, `prompts/`)
and Interactive Prompt Optimization (`ipo`)."""
