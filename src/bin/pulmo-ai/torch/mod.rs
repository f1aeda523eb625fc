//! libtorch models (feature `torch`): the built-in 2D U-Net, TorchScript modules, device
//! choice, loading from a manifest, and training ([`train`]).

pub mod data;
pub mod finetune;
pub mod train;

use std::path::Path;

use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use pulmo::infer::manifest::{Arch, Manifest, WeightFormat, check_sha256};
use pulmo::infer::pipeline::{SliceModel, SlicePipeline};
use pulmo::infer::{DeviceChoice, InferError, ModelInfo, Segmenter};

/// The device for `choice`: CUDA when asked for (an error if absent) or when `Auto` finds
/// it, else CPU.
pub fn device(choice: DeviceChoice) -> Result<Device, InferError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda => {
            if tch::Cuda::is_available() {
                Ok(Device::Cuda(0))
            } else {
                Err(InferError::Input(
                    "CUDA was requested but libtorch reports no CUDA device (CPU-only libtorch, \
                     no driver, or libtorch_cuda not linked: build with --features cuda)"
                        .into(),
                ))
            }
        }
        DeviceChoice::Auto => Ok(if tch::Cuda::is_available() {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }),
    }
}

pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Two 3x3 convolutions with batch norm and ReLU.
#[derive(Debug)]
struct Block {
    c1: nn::Conv2D,
    b1: nn::BatchNorm,
    c2: nn::Conv2D,
    b2: nn::BatchNorm,
}

impl Block {
    fn new(p: nn::Path, cin: i64, cout: i64) -> Block {
        let cfg = nn::ConvConfig {
            padding: 1,
            bias: false,
            ..Default::default()
        };
        Block {
            c1: nn::conv2d(&p / "c1", cin, cout, 3, cfg),
            b1: nn::batch_norm2d(&p / "b1", cout, Default::default()),
            c2: nn::conv2d(&p / "c2", cout, cout, 3, cfg),
            b2: nn::batch_norm2d(&p / "b2", cout, Default::default()),
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        x.apply(&self.c1)
            .apply_t(&self.b1, train)
            .relu()
            .apply(&self.c2)
            .apply_t(&self.b2, train)
            .relu()
    }
}

/// A 2D U-Net: `depth` down-sampling steps, `base * 2^i` channels at level i, transposed
/// convolutions up, skip connections by concatenation, a 1x1 head to the class logits.
#[derive(Debug)]
pub struct UNet {
    down: Vec<Block>,
    bottom: Block,
    up: Vec<(nn::ConvTranspose2D, Block)>,
    head: nn::Conv2D,
}

impl UNet {
    pub fn new(p: &nn::Path, in_channels: i64, classes: i64, arch: &Arch) -> UNet {
        let ch = |i: usize| arch.base_channels << i;
        let mut down = Vec::new();
        let mut cin = in_channels;
        for i in 0..arch.depth {
            down.push(Block::new(p / format!("down{i}"), cin, ch(i)));
            cin = ch(i);
        }
        let bottom = Block::new(p / "bottom", cin, ch(arch.depth));
        let up = (0..arch.depth)
            .rev()
            .map(|i| {
                let t = nn::conv_transpose2d(
                    p / format!("upconv{i}"),
                    ch(i + 1),
                    ch(i),
                    2,
                    nn::ConvTransposeConfig {
                        stride: 2,
                        ..Default::default()
                    },
                );
                (t, Block::new(p / format!("up{i}"), 2 * ch(i), ch(i)))
            })
            .collect();
        let head = nn::conv2d(p / "head", ch(0), classes, 1, Default::default());
        UNet {
            down,
            bottom,
            up,
            head,
        }
    }
}

impl ModuleT for UNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut skips = Vec::with_capacity(self.down.len());
        let mut x = x.shallow_clone();
        for b in &self.down {
            let y = b.forward_t(&x, train);
            x = y.max_pool2d_default(2);
            skips.push(y);
        }
        x = self.bottom.forward_t(&x, train);
        for (t, b) in &self.up {
            let skip = skips.pop().expect("one skip per level");
            let up = x.apply(t);
            x = b.forward_t(&Tensor::cat(&[up, skip], 1), train);
        }
        x.apply(&self.head)
    }
}

/// A network ready to run.
pub enum Net {
    /// The variable store owns the weights the network uses.
    Builtin {
        _vs: nn::VarStore,
        net: Box<UNet>,
    },
    Script(tch::CModule),
}

/// A [`SliceModel`] on libtorch.
pub struct TorchModel {
    pub net: Net,
    pub device: Device,
    pub info: ModelInfo,
    /// Half precision on CUDA.
    pub half: bool,
}

// SAFETY: libtorch tensors and modules may move between threads (tch's `CModule` and
// `VarStore` are `Send`); `TorchModel` is only ever used from one thread at a time (the
// worker's), behind `&mut self`.
unsafe impl Send for TorchModel {}

impl TorchModel {
    fn forward(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        match &self.net {
            Net::Builtin { net, .. } => Ok(net.forward_t(x, false)),
            Net::Script(m) => m.forward_ts(&[x]),
        }
    }
}

impl SliceModel for TorchModel {
    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    fn predict(&mut self, input: &[f32], shape: [usize; 4]) -> Result<Vec<f32>, InferError> {
        let err = |message: String| InferError::Model {
            model: self.info.name.clone(),
            message,
        };
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        if input.len() != shape.iter().product::<usize>() {
            return Err(err(format!(
                "{} input values for shape {shape:?}",
                input.len()
            )));
        }
        // The input is read in place (no copy into a new tensor) and the probabilities
        // are copied once, from the device straight into the returned buffer: the same
        // transfers as a plain PyTorch `net(x.to(dev)).softmax(1).cpu()`.
        let mut out: Vec<f32> = Vec::new();
        tch::no_grad(|| -> Result<(), tch::TchError> {
            // SAFETY: `input` outlives `x` (both end in this closure), the shape matches
            // its length (checked above), and f32 is the tensor's kind.
            let x = unsafe {
                Tensor::f_from_blob(
                    input.as_ptr().cast(),
                    &dims,
                    &contiguous_strides(&dims),
                    Kind::Float,
                    Device::Cpu,
                )?
            };
            let mut x = x.f_to_device(self.device)?;
            if self.half {
                x = x.f_to_kind(Kind::Half)?;
            }
            let probs = self.forward(&x)?.f_softmax(1, Kind::Float)?;
            let size = probs.size();
            if size.len() != 4 || size[0] != dims[0] || size[2] != dims[2] || size[3] != dims[3]
            {
                return Err(tch::TchError::Shape(format!(
                    "output shape {size:?} does not match input {dims:?} (expected [N, classes, H, W])"
                )));
            }
            out = vec![0f32; size.iter().product::<i64>() as usize];
            // SAFETY: `out` holds exactly the elements of `size`, outlives `dst`, and
            // nothing else touches it while `dst` exists.
            let mut dst = unsafe {
                Tensor::f_from_blob(
                    out.as_mut_ptr().cast_const().cast(),
                    &size,
                    &contiguous_strides(&size),
                    Kind::Float,
                    Device::Cpu,
                )?
            };
            dst.f_copy_(&probs)?;
            Ok(())
        })
        .map_err(|e| err(e.to_string()))?;
        Ok(out)
    }

    fn batch_size(&self, h: usize, w: usize) -> usize {
        let pixels = (h * w).max(1);
        match self.device {
            Device::Cuda(_) => ((1 << 24) / pixels).clamp(1, 128),
            _ => ((1 << 19) / pixels).clamp(1, 16),
        }
    }
}

/// Row-major strides of `dims`.
fn contiguous_strides(dims: &[i64]) -> Vec<i64> {
    let mut strides = vec![1i64; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * dims[i + 1];
    }
    strides
}

/// Builds the U-Net of `manifest` in a fresh var store on `device`.
pub fn builtin_net(
    manifest: &Manifest,
    device: Device,
) -> Result<(nn::VarStore, UNet), InferError> {
    let arch = manifest.arch.as_ref().ok_or_else(|| InferError::Manifest {
        path: manifest.weights.clone().into(),
        message: "no architecture".into(),
    })?;
    let vs = nn::VarStore::new(device);
    let net = UNet::new(
        &vs.root(),
        manifest.input.channels() as i64,
        manifest.classes.len() as i64,
        arch,
    );
    Ok((vs, net))
}

/// Loads safetensors weights into `vs`, checking names and shapes first so a wrong file
/// is a clear error rather than a libtorch exception.
pub fn load_weights(vs: &mut nn::VarStore, path: &Path) -> Result<(), InferError> {
    let bad = |message: String| InferError::Weights {
        path: path.to_path_buf(),
        message,
    };
    if !path.is_file() {
        return Err(bad("file not found".into()));
    }
    let tensors = Tensor::read_safetensors(path)
        .map_err(|e| bad(format!("not readable as safetensors: {e}")))?;
    let by_name: std::collections::HashMap<_, _> = tensors.into_iter().collect();
    for (name, var) in vs.variables() {
        match by_name.get(&name) {
            None => {
                return Err(bad(format!(
                    "tensor '{name}' missing (a different architecture?)"
                )));
            }
            Some(t) if t.size() != var.size() => {
                return Err(bad(format!(
                    "tensor '{name}' has shape {:?}, the architecture needs {:?}",
                    t.size(),
                    var.size()
                )));
            }
            _ => {}
        }
    }
    vs.load(path).map_err(|e| bad(e.to_string()))?;
    // Weights may be stored in half precision; compute in f32 on the CPU.
    vs.float();
    Ok(())
}

/// Loads the model a manifest describes as a [`Segmenter`] on `choice`.
pub fn load_segmenter(
    manifest_path: &Path,
    choice: DeviceChoice,
) -> Result<Box<dyn Segmenter>, InferError> {
    let manifest = Manifest::read(manifest_path)?;
    let weights = manifest.weights_path(manifest_path);
    if !weights.is_file() {
        return Err(InferError::Weights {
            path: weights,
            message: "file not found".into(),
        });
    }
    check_sha256(&manifest, &weights)?;
    let device = device(choice)?;
    let half = matches!(device, Device::Cuda(_));
    let net = match manifest.format {
        WeightFormat::Safetensors => {
            let (mut vs, net) = builtin_net(&manifest, device)?;
            load_weights(&mut vs, &weights)?;
            if half {
                vs.half();
            }
            Net::Builtin {
                _vs: vs,
                net: Box::new(net),
            }
        }
        WeightFormat::Torchscript => {
            let mut m = tch::CModule::load_on_device(&weights, device).map_err(|e| {
                InferError::Weights {
                    path: weights.clone(),
                    message: format!("not a TorchScript module: {e}"),
                }
            })?;
            m.set_eval();
            if half {
                m.to(device, Kind::Half, false);
            }
            Net::Script(m)
        }
    };
    let mut model = TorchModel {
        net,
        device,
        info: ModelInfo {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            device: device_name(device),
        },
        half,
    };
    // A dry run catches wrong shapes (channels in, classes out) at load time.
    let p = manifest.input.pad_multiple.max(16);
    let c = manifest.input.channels();
    let probe = model
        .predict(&vec![0.0; c * p * p], [1, c, p, p])
        .map_err(|e| InferError::Weights {
            path: weights.clone(),
            message: format!("does not run on a [1, {c}, {p}, {p}] input: {e}"),
        })?;
    if probe.len() != manifest.classes.len() * p * p {
        return Err(InferError::Weights {
            path: weights,
            message: format!(
                "returns {} channels, the manifest lists {} classes",
                probe.len() / (p * p),
                manifest.classes.len()
            ),
        });
    }
    Ok(Box::new(SlicePipeline {
        model,
        task: manifest.task,
        spec: manifest.input.clone(),
        class_labels: manifest.class_labels(),
        post: manifest.postprocess.clone(),
    }))
}
