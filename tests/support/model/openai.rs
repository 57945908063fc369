//! The OpenAI Responses API as codex expects it (to be written).
