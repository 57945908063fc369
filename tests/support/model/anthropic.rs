//! The Anthropic Messages API as Claude Code expects it (to be written).
