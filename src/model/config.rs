//! A Hugging Face `config.json` for the Llama / Mistral / Qwen2 family, read once and checked:
//! rotary settings (`rope_theta` and `rope_scaling`, or transformers 5's `rope_parameters`;
//! default, linear and llama3 scaling), grouped-query heads, biases, the sliding window and
//! tied embeddings. The judge's decoder and the trainer's read the same struct, so the two
//! cannot disagree about a checkpoint.

use std::path::Path;

use serde::Deserialize;

use super::ModelError;

/// The subset of `config.json` the decoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// transformers >= 5 writes `rope_theta` and the scaling together under this key.
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama: bias on q, k, v and o.
    #[serde(default)]
    pub attention_bias: bool,
    /// Mistral: each token sees at most this many previous positions.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Qwen2 keeps `sliding_window` in its config but only uses it when this is true.
    #[serde(default)]
    pub use_sliding_window: bool,
    #[serde(default)]
    pub hidden_act: Option<String>,
    /// Llama: bias on gate, up and down.
    #[serde(default)]
    pub mlp_bias: bool,
}

fn default_theta() -> f64 {
    10000.0
}

fn default_rope_type() -> String {
    "default".into()
}

#[derive(Debug, Clone, Deserialize)]
pub struct RopeParameters {
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(flatten)]
    pub scaling: RopeScaling,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RopeScaling {
    #[serde(alias = "type")]
    #[serde(default = "default_rope_type")]
    pub rope_type: String,
    #[serde(default)]
    pub factor: Option<f64>,
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
}

impl ModelConfig {
    pub fn read(dir: &Path) -> Result<ModelConfig, ModelError> {
        let p = dir.join("config.json");
        let s = std::fs::read_to_string(&p)
            .map_err(|e| ModelError::Load(format!("{}: {e}", p.display())))?;
        let mut c: ModelConfig = serde_json::from_str(&s)
            .map_err(|e| ModelError::Load(format!("{}: {e}", p.display())))?;
        if let Some(rp) = c.rope_parameters.take() {
            if let Some(theta) = rp.rope_theta {
                c.rope_theta = theta;
            }
            if c.rope_scaling.is_none() {
                c.rope_scaling = Some(rp.scaling);
            }
        }
        if !matches!(c.model_type.as_str(), "llama" | "mistral" | "qwen2") {
            return Err(ModelError::Load(format!(
                "model_type {:?} is not supported (llama, mistral, qwen2)",
                c.model_type
            )));
        }
        if let Some(act) = &c.hidden_act
            && act != "silu"
        {
            return Err(ModelError::Load(format!(
                "hidden_act {act:?} is not supported (silu)"
            )));
        }
        if !c.num_attention_heads.is_multiple_of(c.kv_heads()) {
            return Err(ModelError::Load(
                "num_attention_heads must be a multiple of num_key_value_heads".into(),
            ));
        }
        Ok(c)
    }

    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// Bias on q/k/v (Qwen2 always; Llama when `attention_bias`), and on o (Llama only).
    pub fn qkv_bias(&self) -> bool {
        self.model_type == "qwen2" || self.attention_bias
    }

    pub fn window(&self) -> Option<usize> {
        match self.model_type.as_str() {
            "mistral" => self.sliding_window,
            "qwen2" if self.use_sliding_window => self.sliding_window,
            _ => None,
        }
    }

    /// Inverse rotary frequencies, computed in f32 operation by operation as transformers
    /// computes them (`1.0 / base ** (arange(0, d, 2).float() / d)`, the llama3 blend on f32
    /// tensors). Rounding matters here: an ulp of difference in a frequency is an angle error
    /// of position × 6e-8 rad, 1.7e-4 rad at position 2,800, which a deep model amplifies
    /// into score differences ten times transformers' own sdpa-vs-eager spread.
    pub fn inv_freq(&self) -> Result<Vec<f32>, ModelError> {
        let d = self.head_dim();
        let theta = self.rope_theta as f32;
        let base: Vec<f32> = (0..d / 2)
            .map(|i| 1.0f32 / theta.powf((2 * i) as f32 / d as f32))
            .collect();
        let Some(s) = &self.rope_scaling else {
            return Ok(base);
        };
        let factor = s.factor.unwrap_or(1.0) as f32;
        match s.rope_type.as_str() {
            "default" => Ok(base),
            "linear" => Ok(base.iter().map(|f| f / factor).collect()),
            "llama3" => {
                let old = s.original_max_position_embeddings.unwrap_or(8192) as f32;
                let (lo, hi) = (
                    s.low_freq_factor.unwrap_or(1.0) as f32,
                    s.high_freq_factor.unwrap_or(4.0) as f32,
                );
                let (lo_wave, hi_wave) = (old / lo, old / hi);
                Ok(base
                    .iter()
                    .map(|&f| {
                        let wave = 2.0 * std::f32::consts::PI / f;
                        let scaled = if wave > lo_wave { f / factor } else { f };
                        let smooth = (old / wave - lo) / (hi - lo);
                        let blended = (1.0 - smooth) * scaled / factor + smooth * scaled;
                        // transformers' `~(wavelen < high) * ~(wavelen > low)`; wave is
                        // never NaN (f > 0), so the plain comparisons say the same.
                        let medium = wave >= hi_wave && wave <= lo_wave;
                        if medium { blended } else { scaled }
                    })
                    .collect())
            }
            other => Err(ModelError::Load(format!(
                "rope_scaling type {other:?} is not supported (default, linear, llama3)"
            ))),
        }
    }
}

/// Rotary cos and sin tables `(len, inv_freq.len())`, row-major; the angle is the f32
/// product position * inv_freq, as the reference computes it.
pub fn rotary_tables(inv_freq: &[f32], len: usize) -> (Vec<f32>, Vec<f32>) {
    rotary_rows(inv_freq, 0..len)
}

/// As [`rotary_tables`] for the given positions only, one row each (a decoding step needs
/// one row per sequence, not the table up to the longest).
pub fn rotary_rows(
    inv_freq: &[f32],
    positions: impl IntoIterator<Item = usize>,
) -> (Vec<f32>, Vec<f32>) {
    let ang: Vec<f32> = positions
        .into_iter()
        .flat_map(|p| inv_freq.iter().map(move |f| p as f32 * f))
        .collect();
    (
        ang.iter().map(|a| (*a as f64).cos() as f32).collect(),
        ang.iter().map(|a| (*a as f64).sin() as f32).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: serde_json::Value) -> ModelConfig {
        let mut v = serde_json::json!({"model_type": "llama", "vocab_size": 10, "hidden_size": 8,
            "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "max_position_embeddings": 64, "rms_norm_eps": 1e-6});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        let dir = std::env::temp_dir().join(format!(
            "stepkto-cfg-{}-{}",
            std::process::id(),
            v.to_string().len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), v.to_string()).unwrap();
        let c = ModelConfig::read(&dir).unwrap();
        let _ = std::fs::remove_dir_all(dir);
        c
    }

    /// Issue 9, class 6: the rotary frequencies are bit-identical to transformers' f32 values
    /// (an ulp off is an angle error of 1.7e-4 rad at position 2,800). Reference bits from
    /// transformers 5.23 / torch 2.15: `1.0 / (base ** (torch.arange(0, d, 2).float() / d))`
    /// and `ROPE_INIT_FUNCTIONS["llama3"]`.
    #[test]
    fn class_6_rotary_frequencies_match_transformers_bit_for_bit() {
        let c = config(
            serde_json::json!({"hidden_size": 512, "num_attention_heads": 8, "rope_theta": 10000.0}),
        );
        let want: [u32; 32] = [
            1065353216, 1061157137, 1058010522, 1054337179, 1050798235, 1047712803, 1043732615,
            1040747895, 1036831949, 1033475085, 1030116802, 1026341397, 1023510243, 1019364175,
            1016180025, 1012562930, 1008981770, 1005959600, 1001931932, 998911607, 995049016,
            991652109, 988353832, 984533390, 981668463, 977573004, 974350870, 970790693, 967166816,
            964208661, 960132947, 957076594,
        ];
        let got: Vec<u32> = c.inv_freq().unwrap().iter().map(|f| f.to_bits()).collect();
        assert_eq!(got, want);
        let c = config(
            serde_json::json!({"hidden_size": 1024, "num_attention_heads": 8,
            "rope_theta": 500000.0, "max_position_embeddings": 131072, "rope_scaling": {"rope_type": "llama3",
            "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}}),
        );
        let want: [u32; 64] = [
            1065353216, 1062243009, 1059709382, 1057645444, 1054963644, 1052224381, 1049992931,
            1047774305, 1044812720, 1042400160, 1040434848, 1037480348, 1034871981, 1032747160,
            1030233703, 1027413636, 1025116360, 1023079743, 1020030793, 1017547065, 1015523779,
            1012729580, 1010044269, 1007856767, 1005516623, 1002613366, 1000248322, 998321717,
            995260192, 990772486, 984863005, 979408798, 973706706, 967045384, 960179666, 952658054,
            950223245, 948239807, 945335425, 942703001, 940558584, 938099311, 935253236, 932934773,
            930956739, 927879669, 925373035, 923331087, 920588484, 917878407, 915670731, 913386368,
            910456336, 908069481, 906125108, 903112712, 900532135, 898429952, 895853901, 893063879,
            890791079, 888686786, 885670320, 883213055,
        ];
        let got: Vec<u32> = c.inv_freq().unwrap().iter().map(|f| f.to_bits()).collect();
        assert_eq!(got, want);
    }

    /// transformers 5 nests theta and scaling under `rope_parameters`; both spellings agree.
    #[test]
    fn rope_parameters_read_like_rope_theta_and_scaling() {
        let old = config(
            serde_json::json!({"rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3",
            "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}}),
        );
        let new = config(
            serde_json::json!({"rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3",
            "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}}),
        );
        assert_eq!(new.rope_theta, 500000.0);
        assert_eq!(old.inv_freq().unwrap(), new.inv_freq().unwrap());
        let plain = config(
            serde_json::json!({"rope_parameters": {"rope_theta": 1000.0, "rope_type": "default"}}),
        );
        assert_eq!(plain.rope_theta, 1000.0);
        assert_eq!(plain.inv_freq().unwrap()[0], 1.0);
    }
}
