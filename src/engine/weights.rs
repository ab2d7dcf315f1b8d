//! A Qwen2/Llama model's weights on the host as f32, named and shaped exactly as Hugging Face stores them, so a
//! checkpoint folder loads without renaming and a saved one loads back into transformers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::model::ModelSpec;

/// The name of the single file [`HostWeights::save`] writes.
pub const SAVED_FILE: &str = "model.safetensors";

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot read checkpoint {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("checkpoint folder {dir} holds no *.safetensors file")]
    NoFiles { dir: PathBuf },
    #[error("{file}: not a readable safetensors file: {message}")]
    Format { file: PathBuf, message: String },
    #[error("{file}: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    Shape {
        file: PathBuf,
        tensor: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{file}: tensor `{tensor}` has dtype {dtype}; only F32, F16 and BF16 load")]
    Dtype {
        file: PathBuf,
        tensor: String,
        dtype: String,
    },
    #[error("tensor `{tensor}` appears in both {first} and {second}")]
    Duplicate {
        tensor: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("checkpoint {dir}: tensor `{tensor}` (expected shape {expected:?}) is in none of its *.safetensors files")]
    Missing {
        dir: PathBuf,
        tensor: String,
        expected: Vec<usize>,
    },
    #[error("cannot write {file}: {message}")]
    Write { file: PathBuf, message: String },
    #[error("{file}: {message}")]
    Record { file: PathBuf, message: String },
}

/// One tensor the model needs: its Hugging Face name and row-major shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// `model.layers.{layer}.{suffix}`.
pub fn layer_tensor(layer: usize, suffix: &str) -> String {
    format!("model.layers.{layer}.{suffix}")
}

/// Every tensor a model of `spec` needs, in a fixed order (embedding, layers in order, final norm, lm_head): the
/// order random weights are drawn in, so a seed always gives the same weights.
pub fn expected_tensors(spec: &ModelSpec) -> Vec<TensorSpec> {
    let hidden = spec.hidden as usize;
    let inter = spec.intermediate as usize;
    let q_dim = spec.q_dim() as usize;
    let kv_dim = spec.kv_dim() as usize;
    let vocab = spec.vocab as usize;
    let t = |name: String, shape: &[usize]| TensorSpec {
        name,
        shape: shape.to_vec(),
    };
    let mut out = vec![t("model.embed_tokens.weight".into(), &[vocab, hidden])];
    for i in 0..spec.layers as usize {
        out.push(t(layer_tensor(i, "input_layernorm.weight"), &[hidden]));
        for (proj, dim) in [("q_proj", q_dim), ("k_proj", kv_dim), ("v_proj", kv_dim)] {
            out.push(t(layer_tensor(i, &format!("self_attn.{proj}.weight")), &[dim, hidden]));
            if spec.qkv_bias {
                out.push(t(layer_tensor(i, &format!("self_attn.{proj}.bias")), &[dim]));
            }
        }
        out.push(t(layer_tensor(i, "self_attn.o_proj.weight"), &[hidden, q_dim]));
        out.push(t(layer_tensor(i, "post_attention_layernorm.weight"), &[hidden]));
        out.push(t(layer_tensor(i, "mlp.gate_proj.weight"), &[inter, hidden]));
        out.push(t(layer_tensor(i, "mlp.up_proj.weight"), &[inter, hidden]));
        out.push(t(layer_tensor(i, "mlp.down_proj.weight"), &[hidden, inter]));
    }
    out.push(t("model.norm.weight".into(), &[hidden]));
    if !spec.tied_embeddings {
        out.push(t("lm_head.weight".into(), &[vocab, hidden]));
    }
    out
}

/// All of a model's weights as f32, keyed by Hugging Face tensor name (row-major, HF layout: a projection is
/// `[out, in]`). Holds exactly the tensors of [`expected_tensors`], each with its expected length.
#[derive(Clone, Debug, PartialEq)]
pub struct HostWeights {
    tensors: BTreeMap<String, HostTensor>,
}

/// One tensor's shape and row-major values.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl HostWeights {
    /// Seeded random weights (ChaCha8). Matrices and the embedding are uniform in ±sqrt(3/fan_in) (fan_in = the last
    /// dimension), i.e. variance 1/fan_in, so every projection of an O(1) activation stays O(1) and logits through a
    /// tied embedding have unit variance; norm weights are uniform in 1 ± 0.1 and biases in ±0.1, far enough from 1
    /// and 0 that a forward pass which forgets one of them is visibly wrong.
    pub fn random(spec: &ModelSpec, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let tensors = expected_tensors(spec)
            .into_iter()
            .map(|t| {
                let (center, half_width) = if t.shape.len() == 2 {
                    (0.0, (3.0 / t.shape[1] as f32).sqrt())
                } else if t.name.ends_with(".bias") {
                    (0.0, 0.1)
                } else {
                    (1.0, 0.1)
                };
                let values = (0..t.numel())
                    .map(|_| center + rng.random_range(-half_width..half_width))
                    .collect();
                (t.name, HostTensor { shape: t.shape, values })
            })
            .collect();
        Self { tensors }
    }

    /// Every tensor of `spec`, all zeros (to be filled in place).
    pub fn zeros(spec: &ModelSpec) -> Self {
        let tensors = expected_tensors(spec)
            .into_iter()
            .map(|t| {
                let values = vec![0.0; t.numel()];
                (t.name, HostTensor { shape: t.shape, values })
            })
            .collect();
        Self { tensors }
    }

    /// Loads every tensor of `spec` from the `*.safetensors` files of a Hugging Face checkpoint folder (one file or
    /// shards), converting F32/F16/BF16 to f32. Tensors the model does not use (rotary caches, a tied lm_head) are
    /// ignored; a missing tensor, a wrong shape or a tensor in two shards is an error naming it.
    pub fn load(dir: &Path, spec: &ModelSpec) -> Result<Self, WeightsError> {
        let expected: BTreeMap<String, Vec<usize>> =
            expected_tensors(spec).into_iter().map(|t| (t.name, t.shape)).collect();
        let files = safetensors_files(dir)?;
        let mut tensors = BTreeMap::new();
        let mut found_in: BTreeMap<String, PathBuf> = BTreeMap::new();
        for file in files {
            let bytes = std::fs::read(&file).map_err(|source| WeightsError::Io {
                path: file.clone(),
                source,
            })?;
            let st = SafeTensors::deserialize(&bytes).map_err(|e| WeightsError::Format {
                file: file.clone(),
                message: e.to_string(),
            })?;
            for (name, view) in st.tensors() {
                let Some(shape) = expected.get(&name) else { continue };
                if let Some(first) = found_in.get(&name) {
                    return Err(WeightsError::Duplicate {
                        tensor: name,
                        first: first.clone(),
                        second: file,
                    });
                }
                if view.shape() != shape.as_slice() {
                    return Err(WeightsError::Shape {
                        file,
                        tensor: name,
                        found: view.shape().to_vec(),
                        expected: shape.clone(),
                    });
                }
                let values = to_f32(&view).ok_or_else(|| WeightsError::Dtype {
                    file: file.clone(),
                    tensor: name.clone(),
                    dtype: format!("{:?}", view.dtype()),
                })?;
                found_in.insert(name.clone(), file.clone());
                tensors.insert(
                    name,
                    HostTensor {
                        shape: shape.clone(),
                        values,
                    },
                );
            }
        }
        if let Some((name, shape)) = expected.iter().find(|(name, _)| !tensors.contains_key(*name)) {
            return Err(WeightsError::Missing {
                dir: dir.to_path_buf(),
                tensor: name.clone(),
                expected: shape.clone(),
            });
        }
        Ok(Self { tensors })
    }

    /// Writes every tensor as f32 into `dir/model.safetensors` (the folder must exist).
    pub fn save(&self, dir: &Path) -> Result<(), WeightsError> {
        let file = dir.join(SAVED_FILE);
        let write_err = |message: String| WeightsError::Write {
            file: file.clone(),
            message,
        };
        let bytes: Vec<Vec<u8>> = self
            .tensors
            .values()
            .map(|t| t.values.iter().flat_map(|v| v.to_le_bytes()).collect())
            .collect();
        let views = self
            .tensors
            .iter()
            .zip(&bytes)
            .map(|((name, t), b)| Ok((name.clone(), TensorView::new(Dtype::F32, t.shape.clone(), b)?)))
            .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
            .map_err(|e| write_err(e.to_string()))?;
        safetensors::serialize_to_file(views, None, &file).map_err(|e| write_err(e.to_string()))
    }

    /// The tensor called `name`.
    ///
    /// # Panics
    /// When the model has no such tensor: names come from [`expected_tensors`], so that is a programming error.
    pub fn get(&self, name: &str) -> &[f32] {
        &self
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("no weight tensor `{name}`"))
            .values
    }

    /// Mutable values (the shape is fixed), for tests that plant specific weights.
    ///
    /// # Panics
    /// When the model has no such tensor.
    pub fn get_mut(&mut self, name: &str) -> &mut [f32] {
        &mut self
            .tensors
            .get_mut(name)
            .unwrap_or_else(|| panic!("no weight tensor `{name}`"))
            .values
    }

    /// Every tensor with its name, in name order (the order uploads and saves use).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &HostTensor)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// The folder's `*.safetensors` files, sorted so shards load in a stable order.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, WeightsError> {
    let io = |source| WeightsError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "safetensors") {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(WeightsError::NoFiles { dir: dir.to_path_buf() });
    }
    Ok(files)
}

/// Little-endian F32/F16/BF16 bytes as f32; None for any other dtype.
pub(crate) fn to_f32(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let data = view.data();
    let u16s = || data.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    match view.dtype() {
        Dtype::F32 => Some(
            data.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ),
        Dtype::F16 => Some(u16s().map(|b| f16::from_bits(b).to_f32()).collect()),
        Dtype::BF16 => Some(u16s().map(|b| bf16::from_bits(b).to_f32()).collect()),
        _ => None,
    }
}
