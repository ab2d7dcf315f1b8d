//! Reading a Hugging Face `config.json` of the Qwen2/Llama family. (Implemented by the model work item.)

use super::{ModelError, ModelSpec};
use std::path::Path;

pub fn from_hf_config(path: &Path) -> Result<ModelSpec, ModelError> {
    todo!("model work item: {}", path.display())
}
