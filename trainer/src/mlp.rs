//! The model: an MLP (Linear, ReLU, ..., Linear to one logit) whose parameters live in one flat
//! tensor, so noise and optimizer steps are one operation over all layers.
//!
//! Layer `l` is the block `[in_l + 1, out_l]` of the flat tensor: rows `0..in_l` hold the
//! transposed weight `W^T` and the last row the bias, so `z = [a, 1] @ block`. The first layer
//! is applied to the data's augmented inputs `[x, 1]` directly.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tch::{Device, Kind, Tensor};

use crate::Result;

/// Views into one flat parameter (or gradient, or state) tensor, per layer.
#[derive(Debug)]
pub struct LayerViews {
    /// The whole block `[in + 1, out]`.
    pub block: Tensor,
    /// The weight part `W^T`, `[in, out]`.
    pub weight_t: Tensor,
    /// `W` itself, `[out, in]` (a transposed view of `weight_t`).
    pub weight: Tensor,
    /// The bias row, `[out]`.
    pub bias: Tensor,
}

/// Layer sizes: input width, hidden widths, then 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    sizes: Vec<usize>,
}

impl Shape {
    /// An MLP from `inputs` features through `hidden` widths to one logit.
    pub fn new(inputs: usize, hidden: &[usize]) -> Self {
        let mut sizes = vec![inputs];
        sizes.extend_from_slice(hidden);
        sizes.push(1);
        Shape { sizes }
    }

    /// Number of linear layers.
    pub fn depth(&self) -> usize {
        self.sizes.len() - 1
    }

    /// `(in, out)` of layer `l`.
    pub fn layer(&self, l: usize) -> (usize, usize) {
        (self.sizes[l], self.sizes[l + 1])
    }

    /// Number of parameters.
    pub fn numel(&self) -> usize {
        (0..self.depth()).map(|l| self.block_numel(l)).sum()
    }

    fn block_numel(&self, l: usize) -> usize {
        let (i, o) = self.layer(l);
        (i + 1) * o
    }

    /// Splits a flat tensor of [`Shape::numel`] elements into per-layer views.
    pub fn views(&self, flat: &Tensor) -> Vec<LayerViews> {
        let mut start = 0;
        (0..self.depth())
            .map(|l| {
                let (i, o) = self.layer(l);
                let n = self.block_numel(l) as i64;
                let block = flat.narrow(0, start, n).view([i as i64 + 1, o as i64]);
                start += n;
                let weight_t = block.narrow(0, 0, i as i64);
                LayerViews {
                    weight: weight_t.tr(),
                    weight_t,
                    bias: block.select(0, i as i64),
                    block,
                }
            })
            .collect()
    }
}

/// The model's parameters.
#[derive(Debug)]
pub struct Mlp {
    shape: Shape,
    flat: Tensor,
    layers: Vec<LayerViews>,
}

impl Mlp {
    /// PyTorch's default `nn.Linear` initialisation (weights and biases uniform in
    /// +-1/sqrt(in)), drawn from a ChaCha20 stream of `seed`, so a seed gives the same model on
    /// every device.
    pub fn new(shape: Shape, seed: u64, device: Device) -> Result<Self> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut values = Vec::with_capacity(shape.numel());
        for l in 0..shape.depth() {
            let (i, o) = shape.layer(l);
            let bound = 1.0 / (i.max(1) as f32).sqrt();
            values.extend((0..(i + 1) * o).map(|_| rng.random_range(-bound..bound)));
        }
        Mlp::from_flat(shape, Tensor::f_from_slice(&values)?.f_to_device(device)?)
    }

    /// A model over existing flat parameters (taken over, not copied).
    pub fn from_flat(shape: Shape, flat: Tensor) -> Result<Self> {
        assert_eq!(
            flat.size(),
            [shape.numel() as i64],
            "flat parameters match the shape"
        );
        let layers = shape.views(&flat);
        Ok(Mlp {
            shape,
            flat,
            layers,
        })
    }

    /// The layer sizes.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// All parameters, flat. Updated in place, so the layer views stay valid.
    pub fn flat(&self) -> &Tensor {
        &self.flat
    }

    /// The per-layer views of the parameters.
    pub fn layers(&self) -> &[LayerViews] {
        &self.layers
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.flat.device()
    }

    /// Logits `[n, 1]` for augmented inputs `[x, 1]` (`[n, k + 1]`).
    pub fn forward(&self, inputs: &Tensor) -> Tensor {
        let mut a = inputs.mm(&self.layers[0].block);
        for layer in &self.layers[1..] {
            a = layer.bias.addmm(&a.relu(), &layer.weight_t);
        }
        a
    }

    /// The parameters under the names of the equivalent PyTorch
    /// `nn.Sequential(Linear, ReLU, ..., Linear)` (`0.weight`, `0.bias`, `2.weight`, ...), on
    /// the CPU, so `model.load_state_dict(safetensors.torch.load_file(..))` loads them.
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            let w = layer.weight_t.tr().contiguous().to_device(Device::Cpu);
            let b = layer.bias.contiguous().to_device(Device::Cpu);
            out.push((format!("{}.weight", 2 * l), w));
            out.push((format!("{}.bias", 2 * l), b));
        }
        out
    }

    /// Overwrites the parameters with `values` (same shape and layout).
    pub fn load_flat(&mut self, values: &Tensor) -> Result<()> {
        self.flat.f_copy_(&values.f_to_kind(Kind::Float)?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_forward_match_linear_layers() {
        let shape = Shape::new(3, &[4, 2]);
        assert_eq!(shape.numel(), 4 * 4 + 5 * 2 + 3);
        let mlp = Mlp::new(shape, 1, Device::Cpu).unwrap();
        let x = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 1.0, 0.0, 1.0, 1.0, 1.0]).view([2, 4]);
        let sd = mlp.state_dict();
        let names: Vec<&str> = sd.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"
            ]
        );
        assert_eq!(sd[0].1.size(), [4, 3]);
        // The same network written with PyTorch's linear op on the exported tensors.
        let mut a = x.narrow(1, 0, 3);
        for (i, pair) in sd.chunks(2).enumerate() {
            a = a.linear(&pair[0].1, Some(&pair[1].1));
            if i < 2 {
                a = a.relu();
            }
        }
        let diff = (mlp.forward(&x) - a).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{diff}");
    }

    #[test]
    fn init_is_seeded_and_bounded() {
        let a = Mlp::new(Shape::new(9, &[50]), 7, Device::Cpu).unwrap();
        let b = Mlp::new(Shape::new(9, &[50]), 7, Device::Cpu).unwrap();
        let c = Mlp::new(Shape::new(9, &[50]), 8, Device::Cpu).unwrap();
        assert!(a.flat().equal(b.flat()));
        assert!(!a.flat().equal(c.flat()));
        let bound = a.layers()[0].block.abs().max().double_value(&[]);
        assert!(bound <= 1.0 / 3.0, "{bound}");
    }
}
