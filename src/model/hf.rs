//! Reading a Hugging Face `config.json` of the Qwen2/Llama/Mistral family.
//!
//! The JSON is read as an untyped map rather than a derived struct so that a missing or mistyped key is reported
//! by its config name (`num_hidden_layers`), with the file, instead of serde's positional message.

use super::{ModelError, ModelSpec};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// `model_type`s whose architecture is the one the engine implements (pre-norm, RoPE, GQA, SwiGLU, RMSNorm).
const SUPPORTED_MODEL_TYPES: [&str; 3] = ["qwen2", "llama", "mistral"];

/// Reads a `config.json` (or the `config.json` inside a checkpoint directory). The spec is named after the
/// checkpoint's folder; in a Hugging Face hub cache (`models--Org--Name/snapshots/<rev>/`) after the repository.
pub fn from_hf_config(path: &Path) -> Result<ModelSpec, ModelError> {
    let file = if path.is_dir() {
        path.join("config.json")
    } else {
        path.to_path_buf()
    };
    let shown = file.display().to_string();
    let text = std::fs::read_to_string(&file).map_err(|source| ModelError::Io {
        path: shown.clone(),
        source,
    })?;
    let json: Value = serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: shown.clone(),
        message: format!("not valid JSON: {e}"),
    })?;
    let Some(map) = json.as_object() else {
        return Err(ModelError::Config {
            path: shown,
            message: "expected a JSON object".into(),
        });
    };
    let cfg = Config { map, path: &shown };

    let model_type = cfg.string("model_type")?;
    let qkv_bias = match model_type {
        // Qwen2 always has q/k/v biases and its configs do not say so.
        "qwen2" => true,
        "llama" | "mistral" => cfg.opt_bool("attention_bias")?.unwrap_or(false),
        other => {
            return Err(cfg.error(format!(
                "unsupported model_type `{other}`; supported: {}",
                SUPPORTED_MODEL_TYPES.join(", ")
            )));
        }
    };
    let hidden = cfg.dim("hidden_size")?;
    let heads = cfg.dim("num_attention_heads")?;
    let kv_heads = cfg.opt_dim("num_key_value_heads")?.unwrap_or(heads);
    if heads % kv_heads != 0 {
        return Err(cfg.error(format!(
            "num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})"
        )));
    }
    let head_dim = match cfg.opt_dim("head_dim")? {
        Some(d) => d,
        None if hidden % heads == 0 => hidden / heads,
        None => {
            return Err(cfg.error(format!(
                "no head_dim, and hidden_size ({hidden}) is not a multiple of num_attention_heads ({heads})"
            )));
        }
    };
    let max_context = cfg.dim("max_position_embeddings")?;
    warn_on_sliding_window(&cfg, max_context);

    Ok(ModelSpec {
        name: model_name(&file),
        hidden,
        intermediate: cfg.dim("intermediate_size")?,
        layers: cfg.dim("num_hidden_layers")?,
        heads,
        kv_heads,
        head_dim,
        vocab: cfg.dim("vocab_size")?,
        tied_embeddings: cfg.opt_bool("tie_word_embeddings")?.unwrap_or(false),
        rope_theta: rope_theta(&cfg)?,
        rms_eps: cfg.opt_positive("rms_norm_eps")?.unwrap_or(1e-6),
        qkv_bias,
        max_context,
    })
}

/// Our attention is full causal attention; a sliding window narrower than the context would make long-context
/// attention cost less than we predict.
fn warn_on_sliding_window(cfg: &Config, max_context: u32) {
    if cfg.map.get("use_sliding_window").and_then(Value::as_bool) == Some(false) {
        return;
    }
    if let Some(window) = cfg.map.get("sliding_window").and_then(Value::as_u64)
        && window < u64::from(max_context)
    {
        tracing::warn!(
            "{}: sliding_window = {window} is ignored; attention is modelled as full causal attention",
            cfg.path
        );
    }
}

/// The checkpoint folder's name, or the repository name for a hub-cache snapshot.
fn model_name(file: &Path) -> String {
    let abs = std::path::absolute(file).unwrap_or_else(|_| PathBuf::from(file));
    let Some(dir) = abs.parent() else { return "model".into() };
    let name_of = |p: &Path| p.file_name().and_then(|n| n.to_str()).map(str::to_string);
    if let Some(snapshots) = dir.parent()
        && name_of(snapshots).as_deref() == Some("snapshots")
        && let Some(repo) = snapshots.parent().and_then(name_of)
        && let Some(org_and_name) = repo.strip_prefix("models--")
        && let Some(name) = org_and_name.rsplit("--").next()
    {
        return name.to_string();
    }
    name_of(dir).unwrap_or_else(|| "model".into())
}

/// A config's key-value map and the path its errors name. JSON `null` counts as absent, as in transformers.
/// `rope_theta` at the top level (transformers 4), or inside `rope_parameters` (how transformers 5 writes it), else
/// the Llama default of 10000.
fn rope_theta(cfg: &Config<'_>) -> Result<f64, ModelError> {
    if let Some(theta) = cfg.opt_positive("rope_theta")? {
        return Ok(theta);
    }
    match cfg
        .get("rope_parameters")
        .and_then(|p| p.get("rope_theta"))
        .filter(|v| !v.is_null())
    {
        Some(v) => v.as_f64().filter(|&x| x > 0.0 && x.is_finite()).ok_or_else(|| {
            cfg.error(format!(
                "`rope_parameters.rope_theta` must be a positive number, got {v}"
            ))
        }),
        None => Ok(10_000.0),
    }
}

struct Config<'a> {
    map: &'a Map<String, Value>,
    path: &'a str,
}

impl Config<'_> {
    fn error(&self, message: String) -> ModelError {
        ModelError::Config {
            path: self.path.to_string(),
            message,
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn required(&self, key: &str) -> Result<&Value, ModelError> {
        self.get(key)
            .ok_or_else(|| self.error(format!("missing required field `{key}`")))
    }

    fn string(&self, key: &str) -> Result<&str, ModelError> {
        let v = self.required(key)?;
        v.as_str()
            .ok_or_else(|| self.error(format!("`{key}` must be a string, got {v}")))
    }

    fn dim(&self, key: &str) -> Result<u32, ModelError> {
        let v = self.required(key)?;
        self.to_dim(key, v)
    }

    fn opt_dim(&self, key: &str) -> Result<Option<u32>, ModelError> {
        self.get(key).map(|v| self.to_dim(key, v)).transpose()
    }

    fn to_dim(&self, key: &str, v: &Value) -> Result<u32, ModelError> {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| self.error(format!("`{key}` must be a positive integer, got {v}")))
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>, ModelError> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.error(format!("`{key}` must be true or false, got {v}")))
            })
            .transpose()
    }

    fn opt_positive(&self, key: &str) -> Result<Option<f64>, ModelError> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .filter(|&x| x > 0.0 && x.is_finite())
                    .ok_or_else(|| self.error(format!("`{key}` must be a positive number, got {v}")))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::by_name;
    use std::fs;

    /// Qwen/Qwen2.5-0.5B's config.json as published.
    const QWEN25_05B: &str = r#"{
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151643,
  "hidden_act": "silu",
  "hidden_size": 896,
  "initializer_range": 0.02,
  "intermediate_size": 4864,
  "max_position_embeddings": 32768,
  "max_window_layers": 24,
  "model_type": "qwen2",
  "num_attention_heads": 14,
  "num_hidden_layers": 24,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 32768,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.40.1",
  "use_cache": true,
  "use_mrope": false,
  "use_sliding_window": false,
  "vocab_size": 151936
}"#;

    /// Writes `text` as `<tmp>/<folder>/config.json`.
    fn write_config(tmp: &tempfile::TempDir, folder: &str, text: &str) -> PathBuf {
        let dir = tmp.path().join(folder);
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.json");
        fs::write(&file, text).unwrap();
        file
    }

    #[test]
    fn qwen_config_matches_the_catalog() {
        let tmp = tempfile::tempdir().unwrap();
        let file = write_config(&tmp, "Qwen2.5-0.5B", QWEN25_05B);
        let spec = from_hf_config(&file).unwrap();
        assert_eq!(spec.name, "Qwen2.5-0.5B");
        let catalog = by_name("qwen2.5-0.5b").unwrap();
        assert_eq!(
            ModelSpec {
                name: catalog.name.clone(),
                ..spec
            },
            catalog
        );
        // A checkpoint directory works as well as its config.json.
        assert_eq!(from_hf_config(file.parent().unwrap()).unwrap().name, "Qwen2.5-0.5B");
    }

    #[test]
    fn llama_defaults_and_explicit_head_dim() {
        // Llama-3.2-1B's architecture, with the optional keys it may omit left out.
        let tmp = tempfile::tempdir().unwrap();
        let text = r#"{"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
            "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
            "vocab_size": 128256, "tie_word_embeddings": true, "max_position_embeddings": 131072,
            "rope_scaling": {"rope_type": "llama3", "factor": 32.0}, "mlp_bias": false}"#;
        let spec = from_hf_config(&write_config(&tmp, "Llama-3.2-1B", text)).unwrap();
        assert_eq!((spec.kv_heads, spec.head_dim, spec.max_context), (8, 64, 131_072));
        assert_eq!((spec.rope_theta, spec.rms_eps, spec.qkv_bias), (10_000.0, 1e-6, false));
        assert_eq!(spec.parameters(), 1_235_814_400);
    }

    #[test]
    fn mistral_untied_without_kv_heads_or_head_dim() {
        let tmp = tempfile::tempdir().unwrap();
        let text = r#"{"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": null,
            "vocab_size": 32000, "max_position_embeddings": 32768, "rms_norm_eps": 1e-05,
            "attention_bias": true}"#;
        let spec = from_hf_config(&write_config(&tmp, "m", text)).unwrap();
        assert_eq!((spec.kv_heads, spec.head_dim), (32, 128));
        assert_eq!((spec.tied_embeddings, spec.qkv_bias, spec.rms_eps), (false, true, 1e-5));
    }

    #[test]
    fn mistral_7b_parameter_count() {
        let tmp = tempfile::tempdir().unwrap();
        let text = r#"{"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
            "vocab_size": 32000, "max_position_embeddings": 32768, "rope_theta": 10000.0,
            "sliding_window": 4096, "tie_word_embeddings": false}"#;
        let spec = from_hf_config(&write_config(&tmp, "Mistral-7B-v0.1", text)).unwrap();
        assert_eq!(spec.parameters(), 7_241_732_096);
    }

    #[test]
    fn missing_field_names_the_field_and_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let file = write_config(&tmp, "broken", &QWEN25_05B.replace(r#""num_hidden_layers": 24,"#, ""));
        let msg = from_hf_config(&file).unwrap_err().to_string();
        assert!(
            msg.contains("num_hidden_layers") && msg.contains(&file.display().to_string()),
            "{msg}"
        );
    }

    #[test]
    fn bad_values_are_rejected_with_their_key() {
        let tmp = tempfile::tempdir().unwrap();
        let cases = [
            (
                r#""hidden_size": 896"#,
                r#""hidden_size": 0"#,
                "`hidden_size` must be a positive integer, got 0",
            ),
            (
                r#""vocab_size": 151936"#,
                r#""vocab_size": "big""#,
                "`vocab_size` must be a positive integer",
            ),
            (
                r#""num_key_value_heads": 2"#,
                r#""num_key_value_heads": 3"#,
                "multiple of num_key_value_heads (3)",
            ),
            (
                r#""tie_word_embeddings": true"#,
                r#""tie_word_embeddings": 1"#,
                "`tie_word_embeddings` must be",
            ),
            (
                r#""rope_theta": 1000000.0"#,
                r#""rope_theta": -1"#,
                "`rope_theta` must be a positive number",
            ),
        ];
        for (i, (from, to, expected)) in cases.into_iter().enumerate() {
            let text = QWEN25_05B.replace(from, to);
            assert_ne!(text, QWEN25_05B, "case {i} did not apply");
            let msg = from_hf_config(&write_config(&tmp, &format!("c{i}"), &text))
                .unwrap_err()
                .to_string();
            assert!(msg.contains(expected), "{msg}");
        }
    }

    #[test]
    fn unknown_model_type_lists_the_supported_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let file = write_config(&tmp, "g", &QWEN25_05B.replace(r#""qwen2""#, r#""gemma2""#));
        let msg = from_hf_config(&file).unwrap_err().to_string();
        assert!(msg.contains("gemma2") && msg.contains("qwen2, llama, mistral"), "{msg}");
    }

    #[test]
    fn unreadable_and_malformed_files() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope").join("config.json");
        assert!(matches!(from_hf_config(&missing), Err(ModelError::Io { .. })));
        let msg = from_hf_config(&write_config(&tmp, "bad", "{ not json"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("not valid JSON"), "{msg}");
        let msg = from_hf_config(&write_config(&tmp, "arr", "[1, 2]"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("expected a JSON object"), "{msg}");
    }

    #[test]
    fn hub_cache_snapshots_are_named_after_the_repository() {
        let tmp = tempfile::tempdir().unwrap();
        let file = write_config(
            &tmp,
            "models--Qwen--Qwen2.5-0.5B/snapshots/060db6499f32faf8b98477b0a26969ef7d8b9987",
            QWEN25_05B,
        );
        assert_eq!(from_hf_config(&file).unwrap().name, "Qwen2.5-0.5B");
    }

    #[test]
    fn rope_theta_is_read_from_rope_parameters_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let text = QWEN25_05B.replace(
            r#""rope_theta": 1000000.0"#,
            r#""rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}"#,
        );
        assert!(text.contains("rope_parameters"));
        fs::write(&path, text).unwrap();
        assert_eq!(from_hf_config(&path).unwrap().rope_theta, 1e6);
    }
}
