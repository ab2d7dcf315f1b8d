//! The built-in Qwen2.5 catalog (values from each model's Hugging Face `config.json`).

use super::{ModelError, ModelSpec};

struct Entry {
    name: &'static str,
    hidden: u32,
    intermediate: u32,
    layers: u32,
    heads: u32,
    kv_heads: u32,
    vocab: u32,
    tied: bool,
}

const ENTRIES: [Entry; 4] = [
    Entry {
        name: "qwen2.5-0.5b",
        hidden: 896,
        intermediate: 4864,
        layers: 24,
        heads: 14,
        kv_heads: 2,
        vocab: 151936,
        tied: true,
    },
    Entry {
        name: "qwen2.5-1.5b",
        hidden: 1536,
        intermediate: 8960,
        layers: 28,
        heads: 12,
        kv_heads: 2,
        vocab: 151936,
        tied: true,
    },
    Entry {
        name: "qwen2.5-3b",
        hidden: 2048,
        intermediate: 11008,
        layers: 36,
        heads: 16,
        kv_heads: 2,
        vocab: 151936,
        tied: true,
    },
    Entry {
        name: "qwen2.5-7b",
        hidden: 3584,
        intermediate: 18944,
        layers: 28,
        heads: 28,
        kv_heads: 4,
        vocab: 152064,
        tied: false,
    },
];

/// Names of the built-in models, in catalog order.
pub const CATALOG: [&str; 4] = [ENTRIES[0].name, ENTRIES[1].name, ENTRIES[2].name, ENTRIES[3].name];

pub(super) fn names() -> Vec<&'static str> {
    CATALOG.to_vec()
}

/// A built-in model by name (case-insensitive).
pub fn by_name(name: &str) -> Result<ModelSpec, ModelError> {
    let e = ENTRIES
        .iter()
        .find(|e| e.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| ModelError::Unknown { name: name.to_string() })?;
    Ok(ModelSpec {
        name: e.name.to_string(),
        hidden: e.hidden,
        intermediate: e.intermediate,
        layers: e.layers,
        heads: e.heads,
        kv_heads: e.kv_heads,
        head_dim: e.hidden / e.heads,
        vocab: e.vocab,
        tied_embeddings: e.tied,
        rope_theta: 1e6,
        rms_eps: 1e-6,
        qkv_bias: true,
        max_context: 32768,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_bytes_per_token_match_the_architecture() {
        // 2 (K, V) × layers × kv_heads × head_dim × 2 bytes
        assert_eq!(
            by_name("qwen2.5-0.5b").unwrap().kv_bytes_per_token(),
            2 * 24 * 2 * 64 * 2
        );
        assert_eq!(
            by_name("qwen2.5-1.5b").unwrap().kv_bytes_per_token(),
            2 * 28 * 2 * 128 * 2
        );
        assert_eq!(
            by_name("qwen2.5-7b").unwrap().kv_bytes_per_token(),
            2 * 28 * 4 * 128 * 2
        );
    }

    #[test]
    fn unknown_model_lists_the_valid_ones() {
        let msg = by_name("llama-9000").unwrap_err().to_string();
        assert!(
            msg.contains("llama-9000") && msg.contains("qwen2.5-0.5b") && msg.contains("qwen2.5-7b"),
            "{msg}"
        );
    }
}
