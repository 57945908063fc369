//! Cost estimates for CLIs that report tokens but no cost (codex, gemini): a built-in table of
//! model prices in USD per million tokens, which the spec's `pricing` replaces and extends.
//!
//! Estimates only: a provider's prices change, discounts (batch, long-context tiers) are not
//! modelled, and a model missing from both tables has no estimate at all (the report says so
//! rather than guessing). Claude Code reports its own cost, which is used as it is.

use std::collections::BTreeMap;

use super::output::Tokens;
use crate::spec::model::Price;

/// When the built-in prices were last checked against the providers' price pages.
pub const CHECKED: &str = "2026-06";

/// The built-in prices: model, input, cached input, output (USD per million tokens).
pub const BUILT_IN: &[(&str, f64, f64, f64)] = &[
    ("gpt-5.5", 5.00, 0.50, 30.00),
    ("gpt-5.4", 2.50, 0.25, 15.00),
    ("gpt-5.4-mini", 0.75, 0.075, 4.50),
    ("gpt-5.4-nano", 0.20, 0.02, 1.25),
    ("gpt-5.2", 1.75, 0.175, 14.00),
    ("gpt-5", 1.25, 0.125, 10.00),
    ("gpt-5-mini", 0.25, 0.025, 2.00),
    ("gemini-2.5-pro", 1.25, 0.125, 10.00),
    ("gemini-2.5-flash", 0.30, 0.03, 2.50),
];

/// The price of `model`: the spec's, else the built-in one.
pub fn price(model: &str, spec: &BTreeMap<String, Price>) -> Option<Price> {
    if let Some(price) = spec.get(model) {
        return Some(*price);
    }
    BUILT_IN
        .iter()
        .find(|(name, ..)| *name == model)
        .map(|&(_, input, cached, output)| Price {
            input,
            cached_input: Some(cached),
            output,
        })
}

/// The estimated cost of `tokens` at `price`, in USD.
pub fn cost(tokens: Tokens, price: Price) -> f64 {
    let cached = tokens.cached.min(tokens.input);
    let fresh = tokens.input - cached;
    let per_token = |usd_per_million: f64| usd_per_million / 1_000_000.0;
    fresh as f64 * per_token(price.input)
        + cached as f64 * per_token(price.cached_input.unwrap_or(price.input))
        + tokens.output as f64 * per_token(price.output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_input_is_priced_apart_and_the_spec_replaces_the_table() {
        let tokens = Tokens {
            input: 1_000_000,
            cached: 400_000,
            output: 100_000,
        };
        let gpt5 = price("gpt-5", &BTreeMap::new()).expect("built in");
        // 0.6M fresh at 1.25, 0.4M cached at 0.125, 0.1M out at 10.
        assert!((cost(tokens, gpt5) - (0.75 + 0.05 + 1.0)).abs() < 1e-9);
        let spec = BTreeMap::from([(
            "gpt-5".to_owned(),
            Price {
                input: 2.0,
                cached_input: None,
                output: 0.0,
            },
        )]);
        let own = price("gpt-5", &spec).expect("the spec's");
        assert!(
            (cost(tokens, own) - 2.0).abs() < 1e-9,
            "no cached price: input price"
        );
        assert_eq!(price("gpt-6.1-sol", &BTreeMap::new()), None);
    }
}
